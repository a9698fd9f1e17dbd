//! How the command line prints each report: aligned tables and sentences
//! for people, JSON (`--json`) for machines. Shapes of the JSON are part of
//! the interface: scripts parse them.

use std::io::Write;
use std::path::Path;

use socle::node::{
    plural, short_id, Action, ApplyReport, ContainerStatus, DeleteReport, FsckReport, GcReport,
    ImageDetails, ImagesListReport, ImagesUpdateReport, InstallReport, LintFinding, LintSeverity,
    ListReport, Outcome, PackReport, PruneReport, PullReport, StatusReport, TagReport,
    UninstallReport, UpdateAllReport, UpdateReport, UpdateStatus, VerifyOutcome, VerifyReport,
};

use super::progress;

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// Prints rows as aligned columns under a header.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

// ---- containers ----------------------------------------------------------

pub fn installed(json: bool, report: &InstallReport) -> anyhow::Result<()> {
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if json {
        return print_json(report);
    }
    println!(
        "Installed {} from {} ({}) in {}",
        report.name,
        report.image,
        short_id(&report.image_id),
        report.deployment.display()
    );
    if let Some(u) = &report.unit {
        println!(
            "Unit {} is enabled; start it with: systemctl start {}",
            u.display(),
            u.file_name().unwrap_or_default().to_string_lossy()
        );
    }
    Ok(())
}

pub fn updated(json: bool, report: &UpdateReport) -> anyhow::Result<()> {
    if json {
        return print_json(report);
    }
    for m in &report.messages {
        eprintln!("note: {m}");
    }
    match report.status {
        UpdateStatus::UpToDate => println!("Latest version already installed."),
        status => println!(
            "{} {}: {} ({}) -> {} ({}), slot {}",
            report.name,
            status,
            report.image_before,
            short_id(&report.id_before),
            report.image_after,
            short_id(&report.id_after),
            report.slot
        ),
    }
    Ok(())
}

pub fn updated_all(json: bool, report: &UpdateAllReport) -> anyhow::Result<()> {
    let rows = report.rows.iter();
    id_changes(
        json,
        report,
        rows.map(|r| (&r.name, &r.id_before, &r.id_after, &r.status)),
    )
}

/// The report of `update --all` and `images update`: the JSON rows, or a
/// table of what changed.
fn id_changes<'a>(
    json: bool,
    report: &impl serde::Serialize,
    rows: impl Iterator<Item = (&'a String, &'a String, &'a String, &'a String)>,
) -> anyhow::Result<()> {
    if json {
        return print_json(report);
    }
    print_table(
        &["NAME", "ID BEFORE", "ID AFTER", "STATUS"],
        &rows
            .map(|(name, before, after, status)| {
                vec![
                    name.clone(),
                    short_id(before).to_string(),
                    short_id(after).to_string(),
                    status.clone(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    Ok(())
}

pub fn uninstalled(json: bool, name: &str, report: &UninstallReport) -> anyhow::Result<()> {
    if json {
        return print_json(report);
    }
    for m in &report.messages {
        eprintln!("note: {m}");
    }
    for k in &report.kept {
        eprintln!("note: kept {}: it was edited after install", k.display());
    }
    println!("Uninstalled {name}.");
    Ok(())
}

pub fn listed(json: bool, report: &ListReport) -> anyhow::Result<()> {
    for m in &report.notes {
        eprintln!("note: {m}");
    }
    if json {
        return print_json(&report.containers);
    }
    let row = |r: &ContainerStatus| {
        vec![
            r.name.clone(),
            r.image.clone(),
            short_id(&r.image_id).to_string(),
            r.state.to_string(),
            r.runtime.clone(),
            r.slot.to_string(),
        ]
    };
    print_table(
        &["NAME", "IMAGE", "IMAGE ID", "STATE", "RUNTIME", "SLOT"],
        &report.containers.iter().map(row).collect::<Vec<_>>(),
    );
    Ok(())
}

pub fn applied(json: bool, report: &ApplyReport) -> anyhow::Result<()> {
    if json {
        return print_json(report);
    }
    for p in &report.problems {
        println!("! {}: left out: {p}", p.name);
    }
    for s in &report.steps {
        let mut line = format!(
            "{} {} {} ({})",
            s.action.mark(),
            s.action.word(),
            s.name,
            s.image
        );
        if !s.changes.is_empty() {
            line.push_str(&format!(": {}", s.changes.join(", ")));
        }
        match &s.outcome {
            Outcome::Planned | Outcome::Done => {}
            Outcome::Skipped(why) => line.push_str(&format!(" — skipped: {why}")),
            Outcome::Failed(why) => line.push_str(&format!(" — failed: {why}")),
        }
        println!("{line}");
        for w in &s.warnings {
            eprintln!("warning: {}: {w}", s.name);
        }
    }
    if report.unchanged() && report.problems.is_empty() {
        println!("Nothing to change: the node is as declared.");
    } else if report.dry_run {
        println!("Dry run: nothing was changed.");
    } else {
        let count = |a: Action| {
            report
                .steps
                .iter()
                .filter(|s| s.action == a && s.outcome == Outcome::Done)
                .count()
        };
        println!(
            "Applied: {} installed, {} updated, {} uninstalled, {} unchanged.",
            count(Action::Install),
            count(Action::Update),
            count(Action::Uninstall),
            count(Action::Unchanged)
        );
    }
    Ok(())
}

pub fn status(json: bool, report: &StatusReport) -> anyhow::Result<()> {
    if json {
        return print_json(report);
    }
    let deployed = |d: &Option<socle::node::Deployed>| {
        d.as_ref().map_or("-".to_string(), |d| {
            format!("{} ({}) slot {}", d.image, short_id(&d.image_id), d.slot)
        })
    };
    print_table(
        &["NAME", "DECLARED", "STATE", "CURRENT", "ROLLBACK", "LAST"],
        &report
            .containers
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    match (&c.declared_in, c.applied) {
                        (Some(_), false) if c.current.is_some() => "yes (by hand)".into(),
                        (Some(_), _) => "yes".into(),
                        (None, true) => "no (applied)".into(),
                        (None, false) => "no".into(),
                    },
                    c.state.clone(),
                    deployed(&c.current),
                    deployed(&c.rollback),
                    c.last.as_ref().map_or("-".into(), |l| {
                        format!(
                            "{} {} {}",
                            l.operation,
                            if l.ok { "ok" } else { "FAILED" },
                            l.at
                        )
                    }),
                ]
            })
            .collect::<Vec<_>>(),
    );
    for c in &report.containers {
        if let Some(l) = c.last.as_ref().filter(|l| !l.ok) {
            println!("{}: last {} failed: {}", c.name, l.operation, l.message);
        }
        for d in &c.drift {
            println!("{}: drift: {d}", c.name);
        }
    }
    for p in &report.problems {
        println!("{}: declaration left out: {p}", p.name);
    }
    Ok(())
}

pub fn checked(json: bool, repair: bool, report: &FsckReport) -> anyhow::Result<()> {
    let clean = report.clean();
    if json {
        let mut v = serde_json::to_value(report)?;
        v["clean"] = clean.into();
        return print_json(&v);
    }
    for f in &report.findings {
        let state = if f.repaired {
            "repaired"
        } else if repair {
            "NOT repaired"
        } else {
            "problem"
        };
        println!(
            "{state}: {} {}: {}; {}",
            f.kind, f.subject, f.problem, f.fix
        );
    }
    for n in &report.notes {
        println!("note: {n}");
    }
    println!(
        "Checked {} containers, {} layers, {} images ({} objects): {}.",
        report.containers_checked,
        report.layers_checked,
        report.images_checked,
        report.objects_checked,
        if report.findings.is_empty() {
            "no problem".to_string()
        } else if clean {
            format!(
                "{} repaired",
                plural(report.findings.len(), "problem", "problems")
            )
        } else {
            plural(
                report.findings.iter().filter(|f| !f.repaired).count(),
                "problem",
                "problems",
            )
        }
    );
    Ok(())
}

// ---- images --------------------------------------------------------------

pub fn pulled(json: bool, report: &PullReport) -> anyhow::Result<()> {
    if json {
        let mut v = serde_json::to_value(report)?;
        v["event"] = "pulled".into();
        progress::emit(v);
    } else {
        println!(
            "Pulled {} ({}): {} layers imported ({}), {} already present, {:.2} s",
            report.image.name,
            short_id(&report.image.id),
            report.layers_imported,
            human_size(report.bytes_imported),
            report.layers_present,
            report.seconds
        );
    }
    Ok(())
}

pub fn image_info(json: bool, d: &ImageDetails) -> anyhow::Result<()> {
    if json {
        return print_json(d);
    }
    println!("Image:    {}", d.name);
    println!("Id:       {}", d.id);
    println!("Created:  {}", d.created.clone().unwrap_or_default());
    if !d.has_exports {
        println!("(no /exports: installs with a default config.json and unit)");
    }
    println!("Labels:");
    for (k, v) in &d.labels {
        println!("  {k}={v}");
    }
    println!("Variables (default values; change with --set VAR=VALUE):");
    for (k, v) in &d.defaults {
        println!("  {k}={v}");
    }
    if !d.required.is_empty() {
        println!("Variables that must be set:");
        for v in &d.required {
            println!("  {v}");
        }
    }
    Ok(())
}

pub fn images_listed(json: bool, all: bool, report: &ImagesListReport) -> anyhow::Result<()> {
    let usage = &report.usage;
    if json {
        // Without -a, the plain array scripts already parse.
        return if all {
            print_json(&serde_json::json!({ "images": report.images, "layers": usage.layers }))
        } else {
            print_json(&report.images)
        };
    }
    print_table(
        &["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED"],
        &report
            .images
            .iter()
            .map(|r| {
                vec![
                    r.repository.clone(),
                    r.tag.clone(),
                    short_id(&r.id).to_string(),
                    r.created.clone().unwrap_or_default(),
                    human_size(r.size),
                    human_size(r.shared_size),
                ]
            })
            .collect::<Vec<_>>(),
    );
    if all {
        println!();
        print_table(
            &["LAYER", "SIZE", "USED BY"],
            &usage
                .layers
                .iter()
                .map(|l| {
                    vec![
                        short_id(&l.digest).to_string(),
                        human_size(l.size),
                        if l.used_by.is_empty() {
                            "- (no image: `socle images prune` removes it)".to_string()
                        } else {
                            l.used_by.join(", ")
                        },
                    ]
                })
                .collect::<Vec<_>>(),
        );
    }
    if !usage.layers.is_empty() {
        let saved = usage.images_size.saturating_sub(usage.store_size);
        println!();
        println!(
            "Disk: {} stored once take {}; the images add up to {}{}.",
            plural(usage.layers.len(), "layer", "layers"),
            human_size(usage.store_size),
            human_size(usage.images_size),
            if saved > 0 {
                format!(" (shared layers save {})", human_size(saved))
            } else {
                String::new()
            }
        );
        println!("Deployments add no file data: their files are hardlinks into the store.");
    }
    Ok(())
}

pub fn tagged(json: bool, r: &TagReport) -> anyhow::Result<()> {
    let (image, tagged) = (&r.image, &r.tagged);
    if json {
        return print_json(&serde_json::json!({
            "name": tagged.name.to_string(),
            "id": tagged.id,
            "from": image.name.to_string(),
            "changed": !r.unchanged,
            "replaced": r.replaced
                .as_ref()
                .map(|r| serde_json::json!({ "name": r.name.to_string(), "id": r.id })),
        }));
    }
    if r.unchanged {
        println!(
            "{} already names {} ({}); nothing changed.",
            tagged.name,
            image.name,
            short_id(&image.id)
        );
    } else if let Some(replaced) = &r.replaced {
        println!(
            "Tagged {} ({}) as {}, which named {} before (`socle images prune` frees what no image uses).",
            image.name,
            short_id(&image.id),
            tagged.name,
            short_id(&replaced.id)
        );
    } else {
        println!(
            "Tagged {} ({}) as {}.",
            image.name,
            short_id(&image.id),
            tagged.name
        );
    }
    Ok(())
}

pub fn deleted(json: bool, r: &DeleteReport) -> anyhow::Result<()> {
    if json {
        return print_json(&serde_json::json!({
            "deleted": r.deleted
                .iter()
                .map(|i| serde_json::json!({ "name": i.name.to_string(), "id": i.id }))
                .collect::<Vec<_>>(),
            "still_used_by": r.still_used_by
                .iter()
                .map(|(image, d)| serde_json::json!({ "image": image, "container": d.container, "slot": d.slot, "current": d.current }))
                .collect::<Vec<_>>(),
            "gc": r.gc,
        }));
    }
    for image in &r.deleted {
        println!("Deleted {} ({}).", image.name, short_id(&image.id));
    }
    for (image, d) in &r.still_used_by {
        println!(
            "{image} was in use by {}: it keeps its files, and the store keeps the image's layers until it no longer uses them.",
            d.describe()
        );
    }
    print_gc(&r.gc);
    Ok(())
}

fn print_gc(gc: &GcReport) {
    for w in &gc.warnings {
        eprintln!("warning: {w}");
    }
    if gc.layers_removed.is_empty() {
        println!("No layer freed: other images or deployments use every layer.");
    } else {
        let unpacked: u64 = gc.layers_removed.iter().map(|l| l.size).sum();
        println!(
            "Removed {} no image uses ({} unpacked): {}.",
            plural(gc.layers_removed.len(), "layer", "layers"),
            human_size(unpacked),
            gc.layers_removed
                .iter()
                .map(|l| short_id(&l.digest).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if gc.objects_removed > 0 {
        println!(
            "Freed {} of {} store objects, {}.",
            gc.objects_removed,
            gc.objects_total,
            human_size(gc.bytes_freed)
        );
    }
    for h in &gc.held {
        println!("Kept for {h}: no name points at its image any more.");
    }
}

pub fn pruned(json: bool, r: &PruneReport) -> anyhow::Result<()> {
    if json {
        let mut v = serde_json::to_value(&r.gc)?;
        v["slots_removed"] = serde_json::to_value(&r.slots_removed)?;
        return print_json(&v);
    }
    print_gc(&r.gc);
    for s in &r.slots_removed {
        println!("Removed {}: no installed container owns it.", s.display());
    }
    Ok(())
}

fn print_damage(report: &VerifyReport) {
    for d in &report.damaged {
        let path = if d.path.is_empty() {
            "/"
        } else {
            d.path.as_str()
        };
        println!(
            "{path} in layer sha256:{}: {}",
            short_id(&d.layer),
            d.problem
        );
    }
}

pub fn verified(json: bool, o: &VerifyOutcome) -> anyhow::Result<()> {
    let (stored, report) = (&o.image, &o.report);
    let Some(repair) = &o.repair else {
        if json {
            return print_json(report);
        }
        if report.damaged.is_empty() {
            println!(
                "{} ({}): {}, {} objects checked, all intact.",
                stored.name,
                short_id(&stored.id),
                plural(report.layers, "layer", "layers"),
                report.objects_checked
            );
        } else {
            print_damage(report);
        }
        return Ok(());
    };
    if json {
        return print_json(&serde_json::json!({
            "damaged": report.damaged,
            "layers_pulled_again": repair.layers,
            "after": repair.after,
        }));
    }
    print_damage(report);
    println!(
        "Pulled {} again from {} ({} layers); now: {} damaged.",
        stored.name,
        repair.source,
        repair.layers.len(),
        repair.after.damaged.len()
    );
    if repair.pulled.image.id != stored.id {
        println!(
            "note: {} now holds another image ({}); {} names it.",
            repair.source,
            short_id(&repair.pulled.image.id),
            stored.name
        );
    }
    if !o.users.is_empty() {
        println!(
            "{} share the changed files (hardlinks): deploy them again (uninstall and install, or update to another image and back).",
            o.users.join(", ")
        );
    }
    Ok(())
}

pub fn images_updated(json: bool, report: &ImagesUpdateReport) -> anyhow::Result<()> {
    let rows = report.rows.iter();
    id_changes(
        json,
        report,
        rows.map(|r| (&r.name, &r.id_before, &r.id_after, &r.status)),
    )?;
    if !json && report.updated() {
        println!("Containers pick the new images up with `socle update NAME` (or --all); `socle images prune` frees what no image uses any more.");
    }
    Ok(())
}

// ---- image definitions ---------------------------------------------------

pub fn packed(json: bool, report: &PackReport) -> anyhow::Result<()> {
    if json {
        return print_json(report);
    }
    for l in &report.layers {
        println!(
            "layer {} ({}, {} entries)",
            l.digest,
            human_size(l.size),
            l.entries
        );
    }
    println!("manifest {}", report.manifest_digest);
    Ok(())
}

/// Prints the findings; an error in them is the command's failure.
pub fn linted(json: bool, dir: &Path, findings: &[LintFinding]) -> anyhow::Result<()> {
    let errors = findings
        .iter()
        .filter(|f| f.severity == LintSeverity::Error)
        .count();
    if json {
        print_json(&findings)?;
    } else {
        for f in findings {
            let level = match f.severity {
                LintSeverity::Error => "error",
                LintSeverity::Warning => "warning",
            };
            println!("{level}: {}: {}", f.file, f.message);
        }
        println!(
            "{}: {errors} errors, {} warnings",
            dir.display(),
            findings.len() - errors
        );
    }
    if errors > 0 {
        anyhow::bail!("{}: {errors} lint errors", dir.display());
    }
    Ok(())
}
