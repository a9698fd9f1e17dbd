//! How the command line shows progress: bars on a terminal, one JSON object
//! per line with `--json`, otherwise only the notes. Notes and warnings
//! always reach stderr.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use socle::node::{short_id, Progress};

/// Only notes, warnings and what a run waits for, on stderr.
pub struct Plain;

impl Progress for Plain {
    fn note(&self, message: &str) {
        eprintln!("warning: {message}");
    }
    fn info(&self, message: &str) {
        eprintln!("note: {message}");
    }
    fn status(&self, message: &str) {
        eprintln!("{message}");
    }
}

/// Progress bars on stderr: one per layer in flight and one for the total,
/// with bytes, rate and ETA.
pub struct Bars {
    multi: MultiProgress,
    total: Mutex<Option<ProgressBar>>,
    layers: Mutex<HashMap<String, (ProgressBar, u64)>>,
}

impl Default for Bars {
    fn default() -> Self {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)),
            total: Mutex::new(None),
            layers: Mutex::new(HashMap::new()),
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Progress for Bars {
    fn resolved(&self, _source: &str, name: &str, manifest: &str, layers: &[(String, u64)]) {
        let total: u64 = layers.iter().map(|(_, s)| s).sum();
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(style(
            "{prefix:>14} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        ));
        bar.set_prefix("total");
        bar.println(format!(
            "Pulling {name} ({}, {} layers)",
            short_id(manifest),
            layers.len()
        ));
        *self.total.lock().expect("progress lock") = Some(bar);
    }

    fn note(&self, message: &str) {
        self.multi.suspend(|| Plain.note(message));
    }

    fn info(&self, message: &str) {
        self.multi.suspend(|| Plain.info(message));
    }

    fn status(&self, message: &str) {
        self.multi.suspend(|| Plain.status(message));
    }

    fn layer_present(&self, digest: &str, size: u64) {
        if let Some(t) = &*self.total.lock().expect("progress lock") {
            t.inc(size);
            t.println(format!("{:>14} already in the store", short_id(digest)));
        }
    }

    fn layer_started(&self, digest: &str, size: u64) {
        let bar = self.multi.insert_from_back(1, ProgressBar::new(size));
        bar.set_style(style(
            "{prefix:>14} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        ));
        bar.set_prefix(short_id(digest).to_string());
        self.layers
            .lock()
            .expect("progress lock")
            .insert(digest.to_string(), (bar, 0));
    }

    fn layer_bytes(&self, digest: &str, done: u64) {
        let mut layers = self.layers.lock().expect("progress lock");
        if let Some((bar, seen)) = layers.get_mut(digest) {
            bar.set_position(done);
            if let Some(t) = &*self.total.lock().expect("progress lock") {
                t.inc(done.saturating_sub(*seen));
            }
            *seen = done;
        }
    }

    fn layer_done(&self, digest: &str, size: u64, seconds: f64) {
        if let Some((bar, _)) = self.layers.lock().expect("progress lock").remove(digest) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        if let Some(t) = &*self.total.lock().expect("progress lock") {
            t.println(format!(
                "{:>14} {:.1} MB in {seconds:.1} s",
                short_id(digest),
                size as f64 / 1e6
            ));
        }
    }

    fn finish(&self) {
        for (_, (bar, _)) in self.layers.lock().expect("progress lock").drain() {
            bar.finish_and_clear();
        }
        if let Some(t) = self.total.lock().expect("progress lock").take() {
            t.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

/// One JSON object per line on stdout; byte counts at most 4 times a
/// second per layer.
pub struct JsonLines {
    last: Mutex<HashMap<String, Instant>>,
}

impl Default for JsonLines {
    fn default() -> Self {
        JsonLines {
            last: Mutex::new(HashMap::new()),
        }
    }
}

pub fn emit(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, &v);
    let _ = writeln!(out);
    let _ = out.flush();
}

impl Progress for JsonLines {
    fn resolved(&self, source: &str, name: &str, manifest: &str, layers: &[(String, u64)]) {
        emit(serde_json::json!({
            "event": "resolved",
            "source": source,
            "name": name,
            "manifest": manifest,
            "layers": layers.iter().map(|(d, s)| serde_json::json!({"digest": d, "size": s})).collect::<Vec<_>>(),
            "bytes": layers.iter().map(|(_, s)| s).sum::<u64>(),
        }));
    }

    fn info(&self, message: &str) {
        Plain.info(message);
    }

    fn status(&self, message: &str) {
        Plain.status(message);
    }

    fn note(&self, message: &str) {
        Plain.note(message);
        emit(serde_json::json!({"event": "note", "message": message}));
    }

    fn layer_present(&self, digest: &str, size: u64) {
        emit(
            serde_json::json!({"event": "layer", "status": "present", "digest": digest, "size": size}),
        );
    }

    fn layer_started(&self, digest: &str, size: u64) {
        emit(
            serde_json::json!({"event": "layer", "status": "downloading", "digest": digest, "size": size}),
        );
    }

    fn layer_bytes(&self, digest: &str, done: u64) {
        let mut last = self.last.lock().expect("progress lock");
        let now = Instant::now();
        let due = last
            .get(digest)
            .is_none_or(|t| now.duration_since(*t) >= Duration::from_millis(250));
        if due {
            last.insert(digest.to_string(), now);
            emit(serde_json::json!({"event": "progress", "digest": digest, "bytes": done}));
        }
    }

    fn layer_done(&self, digest: &str, size: u64, seconds: f64) {
        emit(serde_json::json!({
            "event": "layer", "status": "done", "digest": digest, "size": size,
            "seconds": (seconds * 1000.0).round() / 1000.0,
        }));
    }
}
