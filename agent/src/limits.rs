//! Limits on what one pull may make socle read, inflate and store: a
//! hostile or broken image is refused with an error naming the layer, the
//! limit, the value and how to raise it, instead of filling the disk.
//!
//! The defaults leave room for a node's components (the dockerd image is
//! 201 MB unpacked from 68.6 MB) many times over. They are changed per run
//! with `--limit NAME=VALUE` or `SOCLE_LIMITS=NAME=VALUE,...`.

use std::cell::Cell;
use std::fmt;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A layer's blob as its descriptor declares it and as it streams, and
    /// its unpacked tar: bytes.
    pub layer_size: u64,
    /// All layers of an image unpacked: bytes.
    pub image_size: u64,
    /// Unpacked bytes per compressed byte, once a layer has unpacked
    /// `ratio_after` bytes (small highly compressible layers are common;
    /// a layer inflating a hundredfold past that is a bomb).
    pub ratio: u64,
    pub ratio_after: u64,
    /// Layers an image's manifest may list.
    pub layers: u64,
    /// Tar entries in one layer.
    pub entries: u64,
    /// Bytes of one entry's path.
    pub path_length: u64,
    /// Bytes of one JSON document: an index, a manifest, a config.
    pub json_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            layer_size: 4 * GIB,
            image_size: 8 * GIB,
            ratio: 100,
            ratio_after: 64 * MIB,
            layers: 128,
            entries: 1_000_000,
            path_length: 4096,
            json_size: 4 * MIB,
        }
    }
}

/// How a limit's value is read and shown.
#[derive(Clone, Copy)]
enum Unit {
    Bytes,
    Count,
}

/// A limit's field in [`Limits`].
type Field = fn(&mut Limits) -> &mut u64;

/// Every limit: its name on the command line, its unit and its field.
const FIELDS: &[(&str, Unit, Field)] = &[
    ("layer-size", Unit::Bytes, |l| &mut l.layer_size),
    ("image-size", Unit::Bytes, |l| &mut l.image_size),
    ("ratio", Unit::Count, |l| &mut l.ratio),
    ("ratio-after", Unit::Bytes, |l| &mut l.ratio_after),
    ("layers", Unit::Count, |l| &mut l.layers),
    ("entries", Unit::Count, |l| &mut l.entries),
    ("path-length", Unit::Bytes, |l| &mut l.path_length),
    ("json-size", Unit::Bytes, |l| &mut l.json_size),
];

fn names() -> String {
    FIELDS
        .iter()
        .map(|(n, _, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Limits {
    /// The defaults with `NAME=VALUE` settings applied in order. Sizes take
    /// a `K`, `M`, `G` or `T` suffix (powers of 1024, `KiB` and `KB` read
    /// the same).
    pub fn parse<S: AsRef<str>>(settings: &[S]) -> Result<Limits, String> {
        let mut limits = Limits::default();
        for s in settings {
            let s = s.as_ref().trim();
            if s.is_empty() {
                continue;
            }
            let (name, value) = s
                .split_once('=')
                .ok_or_else(|| format!("limit {s:?}: expected NAME=VALUE (names: {})", names()))?;
            let (_, unit, field) = FIELDS
                .iter()
                .find(|(n, _, _)| *n == name.trim())
                .ok_or_else(|| {
                    format!("limit {s:?}: unknown name {name:?} (names: {})", names())
                })?;
            let v = match unit {
                Unit::Bytes => parse_size(value.trim()),
                Unit::Count => value.trim().parse::<u64>().ok(),
            }
            .filter(|v| *v > 0)
            .ok_or_else(|| {
                format!(
                    "limit {s:?}: {value:?} is not a {} above 0",
                    match unit {
                        Unit::Bytes => "size (like 512M, 4G or 4096)",
                        Unit::Count => "whole number",
                    }
                )
            })?;
            *field(&mut limits) = v;
        }
        Ok(limits)
    }

    /// The error for `what` (a layer's blob, the image's layers, ...) at
    /// `value`, over the limit called `name`.
    pub fn exceeded(&self, name: &'static str, what: impl Into<String>, value: Value) -> Exceeded {
        let mut copy = *self;
        let (_, unit, field) = FIELDS
            .iter()
            .find(|(n, _, _)| *n == name)
            .expect("a known limit name");
        let limit = *field(&mut copy);
        Exceeded {
            what: what.into(),
            name,
            value,
            limit: match unit {
                Unit::Bytes => human(limit),
                Unit::Count => limit.to_string(),
            },
        }
    }
}

/// A size like `4G`, `512MiB`, `64k` or `4096`.
fn parse_size(s: &str) -> Option<u64> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, suffix) = s.split_at(digits);
    let n: u64 = n.parse().ok()?;
    let mult = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => KIB,
        "M" | "MB" | "MIB" => MIB,
        "G" | "GB" | "GIB" => GIB,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// `4 GiB`, `1.5 MiB`, `512 bytes`.
pub fn human(n: u64) -> String {
    let (unit, div) = match n {
        n if n >= GIB => ("GiB", GIB),
        n if n >= MIB => ("MiB", MIB),
        n if n >= KIB => ("KiB", KIB),
        _ => return format!("{n} bytes"),
    };
    let v = n as f64 / div as f64;
    if n % div == 0 {
        format!("{} {unit}", n / div)
    } else {
        format!("{v:.1} {unit}")
    }
}

/// How far past a limit something went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Exactly this many bytes (or items).
    Exact(u64),
    /// Bytes: at least this many (reading stopped there).
    AtLeast(u64),
    /// A ratio: this many unpacked bytes from this many compressed.
    Ratio(u64, u64),
    Count(u64),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Exact(n) => write!(f, "{} ({n} bytes)", human(*n)),
            Value::AtLeast(n) => write!(f, "more than {} ({n} bytes read)", human(n - 1)),
            Value::Ratio(u, c) => write!(
                f,
                "{}:1 ({} unpacked from {})",
                u / (*c).max(1),
                human(*u),
                human(*c)
            ),
            Value::Count(n) => write!(f, "{n}"),
        }
    }
}

/// A limit that was hit: what, the value, the limit and how to raise it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} is {value}, over the {name} limit of {limit}; if the image is trusted, raise it with --limit {name}=VALUE (or SOCLE_LIMITS={name}=VALUE)"
)]
pub struct Exceeded {
    pub what: String,
    pub name: &'static str,
    pub value: Value,
    pub limit: String,
}

/// What one pull may still unpack, shared by the layers it imports side by
/// side: the limits and the unpacked bytes counted so far (layers already
/// in the store included).
#[derive(Debug)]
pub struct ImageBudget {
    pub limits: Limits,
    unpacked: AtomicU64,
}

impl ImageBudget {
    pub fn new(limits: Limits, already_unpacked: u64) -> ImageBudget {
        ImageBudget {
            limits,
            unpacked: AtomicU64::new(already_unpacked),
        }
    }

    /// Counts `n` more unpacked bytes; the total when that passes the image limit.
    fn add(&self, n: u64) -> Option<u64> {
        let total = self.unpacked.fetch_add(n, Ordering::Relaxed) + n;
        (total > self.limits.image_size).then_some(total)
    }
}

/// The first limit a layer's import hit. The readers below record it here
/// as well as returning an I/O error, because tar and the decompressors
/// turn that error into their own messages.
#[derive(Default)]
pub struct Trip(Cell<Option<Exceeded>>);

impl Trip {
    fn set(&self, e: Exceeded) -> io::Error {
        let err = io::Error::other(e.to_string());
        let first = self.0.take().unwrap_or(e);
        self.0.set(Some(first));
        err
    }
    pub fn take(&self) -> Option<Exceeded> {
        self.0.take()
    }
}

/// A layer blob as it streams from its source: cut off once it passes its
/// declared size or the layer limit, reading at most one byte more.
pub struct Compressed<'a, R> {
    inner: R,
    read: &'a Cell<u64>,
    /// The fewest of the declared size and the layer limit, and which.
    cap: u64,
    cap_name: &'static str,
    budget: &'a ImageBudget,
    trip: &'a Trip,
}

impl<'a, R: Read> Compressed<'a, R> {
    pub fn new(
        inner: R,
        declared: Option<u64>,
        budget: &'a ImageBudget,
        read: &'a Cell<u64>,
        trip: &'a Trip,
    ) -> Self {
        let layer = budget.limits.layer_size;
        let (cap, cap_name) = match declared {
            Some(d) if d <= layer => (d, "declared"),
            _ => (layer, "layer-size"),
        };
        Compressed {
            inner,
            read,
            cap,
            cap_name,
            budget,
            trip,
        }
    }
}

impl<R: Read> Read for Compressed<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let done = self.read.get();
        // Never ask for more than one byte past the cap.
        let room = (self.cap + 1).saturating_sub(done);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        let done = done + n as u64;
        self.read.set(done);
        if done > self.cap {
            return Err(self.trip.set(if self.cap_name == "declared" {
                Exceeded {
                    what: "the blob".into(),
                    name: "declared",
                    value: Value::AtLeast(done),
                    limit: format!("{} its descriptor gives", human(self.cap)),
                }
            } else {
                self.budget
                    .limits
                    .exceeded("layer-size", "the blob", Value::AtLeast(done))
            }));
        }
        Ok(n)
    }
}

/// A layer's tar stream as it comes out of the decompressor: stopped once
/// the layer, the image or the ratio to `compressed` bytes passes its limit.
pub struct Unpacked<'a, R> {
    inner: R,
    done: u64,
    compressed: &'a Cell<u64>,
    budget: &'a ImageBudget,
    trip: &'a Trip,
}

impl<'a, R: Read> Unpacked<'a, R> {
    pub fn new(
        inner: R,
        compressed: &'a Cell<u64>,
        budget: &'a ImageBudget,
        trip: &'a Trip,
    ) -> Self {
        Unpacked {
            inner,
            done: 0,
            compressed,
            budget,
            trip,
        }
    }
}

impl<R: Read> Read for Unpacked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        let limits = &self.budget.limits;
        if self.done > limits.layer_size {
            return Err(self.trip.set(limits.exceeded(
                "layer-size",
                "the unpacked layer",
                Value::AtLeast(self.done),
            )));
        }
        let compressed = self.compressed.get();
        if self.done > limits.ratio_after && self.done / limits.ratio > compressed {
            return Err(self.trip.set(limits.exceeded(
                "ratio",
                "the unpacking ratio",
                Value::Ratio(self.done, compressed),
            )));
        }
        if let Some(total) = self.budget.add(n as u64) {
            return Err(self.trip.set(limits.exceeded(
                "image-size",
                "the unpacked image",
                Value::AtLeast(total),
            )));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_override_defaults_and_bad_ones_name_the_fix() {
        let l = Limits::parse(&["layer-size=512M", " layers = 3 ", "path-length=1k", ""]).unwrap();
        assert_eq!(l.layer_size, 512 * MIB);
        assert_eq!(l.layers, 3);
        assert_eq!(l.path_length, 1024);
        assert_eq!(l.image_size, Limits::default().image_size);
        assert_eq!(
            Limits::parse(&["image-size=2GiB"]).unwrap().image_size,
            2 * GIB
        );
        let e = Limits::parse(&["layer_size=1G"]).unwrap_err();
        assert!(
            e.contains("unknown name") && e.contains("layer-size"),
            "{e}"
        );
        let e = Limits::parse(&["layers=lots"]).unwrap_err();
        assert!(e.contains("whole number"), "{e}");
        assert!(Limits::parse(&["ratio=0"]).is_err());
        assert!(Limits::parse(&["layer-size=1X"]).is_err());
        assert!(Limits::parse(&["layer-size"])
            .unwrap_err()
            .contains("NAME=VALUE"));
        assert!(Limits::parse(&["layer-size=99999999999T"]).is_err());
    }

    #[test]
    fn defaults_fit_a_node_component() {
        let l = Limits::default();
        // dockerd: 68.6 MB compressed, 201 MB unpacked, a few dozen layers.
        assert!(l.layer_size > 201_000_000 * 10);
        assert!(l.image_size > 201_000_000 * 10);
        assert!(201 / 68 < l.ratio);
    }

    fn read_all(r: &mut impl Read) -> io::Result<u64> {
        io::copy(r, &mut io::sink())
    }

    #[test]
    fn a_blob_is_cut_one_byte_past_its_declared_size() {
        let budget = ImageBudget::new(Limits::default(), 0);
        let (read, trip) = (Cell::new(0), Trip::default());
        let data = vec![7u8; 1000];
        let mut r = Compressed::new(&data[..], Some(100), &budget, &read, &trip);
        assert!(read_all(&mut r).is_err());
        assert_eq!(read.get(), 101);
        let e = trip.take().unwrap().to_string();
        assert!(e.contains("100 bytes its descriptor gives"), "{e}");
        assert!(e.contains("101 bytes read"), "{e}");

        let (read, trip) = (Cell::new(0), Trip::default());
        let mut r = Compressed::new(&data[..], Some(1000), &budget, &read, &trip);
        assert_eq!(read_all(&mut r).unwrap(), 1000);
        assert!(trip.take().is_none());
    }

    #[test]
    fn an_undeclared_blob_is_cut_at_the_layer_limit() {
        let limits = Limits::parse(&["layer-size=10"]).unwrap();
        let budget = ImageBudget::new(limits, 0);
        let (read, trip) = (Cell::new(0), Trip::default());
        let data = vec![7u8; 1000];
        let mut r = Compressed::new(&data[..], Some(500), &budget, &read, &trip);
        assert!(read_all(&mut r).is_err());
        assert_eq!(read.get(), 11);
        let e = trip.take().unwrap();
        assert_eq!(e.name, "layer-size");
        assert!(e.to_string().contains("--limit layer-size=VALUE"), "{e}");
    }

    #[test]
    fn unpacked_bytes_stop_at_the_layer_image_and_ratio_limits() {
        let data = vec![0u8; 10_000];
        let run = |settings: &[&str], already: u64, compressed: u64| {
            let budget = ImageBudget::new(Limits::parse(settings).unwrap(), already);
            let (c, trip) = (Cell::new(compressed), Trip::default());
            let mut r = Unpacked::new(&data[..], &c, &budget, &trip);
            let result = read_all(&mut r);
            (result.is_ok(), trip.take().map(|e| e.name))
        };
        assert_eq!(run(&[], 0, 1), (true, None));
        assert_eq!(
            run(&["layer-size=5000"], 0, 10_000),
            (false, Some("layer-size"))
        );
        assert_eq!(
            run(&["image-size=12000"], 5000, 10_000),
            (false, Some("image-size"))
        );
        assert_eq!(run(&["image-size=15000"], 5000, 10_000), (true, None));
        // 10000 from 10 is 1000:1: refused past ratio-after, not before.
        assert_eq!(
            run(&["ratio=100", "ratio-after=1K"], 0, 10),
            (false, Some("ratio"))
        );
        assert_eq!(run(&["ratio=100", "ratio-after=20K"], 0, 10), (true, None));
        assert_eq!(run(&["ratio=1000", "ratio-after=1K"], 0, 10), (true, None));
    }

    #[test]
    fn errors_say_what_how_much_the_limit_and_the_fix() {
        let l = Limits::default();
        let e = l.exceeded(
            "layers",
            "the number of layers of image x:1",
            Value::Count(300),
        );
        assert_eq!(
            e.to_string(),
            "the number of layers of image x:1 is 300, over the layers limit of 128; if the image is trusted, raise it with --limit layers=VALUE (or SOCLE_LIMITS=layers=VALUE)"
        );
        let e = l.exceeded("layer-size", "the blob", Value::Exact(1_000_000_000_000));
        assert!(
            e.to_string().contains("931.3 GiB (1000000000000 bytes)"),
            "{e}"
        );
        assert!(e.to_string().contains("limit of 4 GiB"), "{e}");
        assert_eq!(human(512), "512 bytes");
    }
}
