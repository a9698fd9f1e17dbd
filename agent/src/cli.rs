//! The command line: argument parsing and output (tables or `--json`).
//! Every command does its work through the library; this module only
//! translates in and out.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::deploy::{self, Host, InstallOptions};
use crate::pull;
use crate::reference::{ImageName, ImageRef};
use crate::store::{short_id, Store};
use crate::systemd::{self, SystemdMode};

#[derive(Parser, Debug)]
#[command(
    name = "socle",
    version,
    about = "Run a node's foundation (etcd, flanneld, kube-apiserver, dockerd) as system containers",
    long_about = "socle pulls OCI images into an OSTree store, checks them out as read-only root \
file systems and writes systemd units that run them with runc. Images follow the atomic \
`/exports` contract (manifest.json, config.json.template, service.template, tmpfiles.template, hostfs/).",
    after_help = "Typical session:\n  socle pull oci-archive:hello.tar\n  socle install --name hello --set PORT=8081 hello:1\n  systemctl start hello\n  socle list\n  socle uninstall hello"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Where socle keeps and puts things; every path can be moved so tests and
/// image builds run without touching the host.
#[derive(Args, Debug)]
pub struct Global {
    /// Holds the store (repo/) and the deployments (containers/)
    #[arg(
        long,
        global = true,
        env = "SOCLE_STATE_DIR",
        default_value = "/var/lib/socle"
    )]
    pub state_dir: PathBuf,
    /// Where unit files are written
    #[arg(
        long,
        global = true,
        env = "SOCLE_UNIT_DIR",
        default_value = "/etc/systemd/system"
    )]
    pub unit_dir: PathBuf,
    /// Where tmpfiles.d snippets are written
    #[arg(
        long,
        global = true,
        env = "SOCLE_TMPFILES_DIR",
        default_value = "/etc/tmpfiles.d"
    )]
    pub tmpfiles_dir: PathBuf,
    /// Root under which hostfs files and tmpfiles paths land
    #[arg(long, global = true, env = "SOCLE_HOST_ROOT", default_value = "/")]
    pub host_root: PathBuf,
    /// Which systemd to talk to; `none` only writes files
    #[arg(
        long,
        global = true,
        env = "SOCLE_SYSTEMD",
        value_enum,
        default_value = "system"
    )]
    pub systemd: SystemdMode,
    /// The OCI runtime the units run (a name looked up in PATH, or a path)
    #[arg(long, global = true, env = "SOCLE_RUNTIME", default_value = "runc")]
    pub runtime: String,
    /// Print machine-readable JSON instead of tables
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Import an image into the store
    #[command(
        after_help = "IMAGE is one of:\n  oci:DIR[:REF]          an OCI image layout directory\n  oci-archive:FILE[:REF] a tar of an OCI image layout\n  docker-archive:FILE    a `docker save` tarball (named by its RepoTags)"
    )]
    Pull {
        image: String,
        /// Store the image under this NAME[:TAG] instead of the name the source gives
        #[arg(long)]
        name: Option<String>,
    },
    /// Manage the images in the store
    #[command(subcommand)]
    Images(ImagesCommand),
    /// Work on image definitions (a directory holding exports/)
    #[command(subcommand)]
    Image(ImageCommand),
    /// Install an image as a system container (an enabled systemd unit)
    #[command(
        after_help = "Example:\n  socle install --name web --set PORT=8080 --set RECEIVER=ops hello:1\n\nValues given with --set override the image's defaults (see `socle images info IMAGE`)."
    )]
    Install {
        /// Accepted for compatibility with `atomic install --system`
        #[arg(long)]
        system: bool,
        /// Container name (default: the image's repository name)
        #[arg(long)]
        name: Option<String>,
        /// Set a template variable; repeatable
        #[arg(long = "set", value_name = "VAR=VALUE")]
        set: Vec<String>,
        image: String,
    },
    /// Deploy a container again into its other slot: new values, or a newer image
    #[command(
        after_help = "Examples:\n  socle update web --set PORT=9090          # same image, new value\n  socle update web --rebase hello:2         # another image from the store\n\nValues you set before are kept; new image defaults apply to values you never set.\nIf the service was running, it is restarted and must stay active; otherwise socle\nrolls back by itself and says why."
    )]
    #[command(group(clap::ArgGroup::new("which").required(true).args(["name", "all"])))]
    Update {
        /// The container to update
        name: Option<String>,
        /// Update every container whose image has a newer id in the store
        #[arg(long, conflicts_with_all = ["set", "rebase"])]
        all: bool,
        /// Pull the image again from where it came from first
        #[arg(long)]
        pull: bool,
        /// Set a template variable; repeatable
        #[arg(long = "set", value_name = "VAR=VALUE")]
        set: Vec<String>,
        /// Switch to another image: a stored name, or a source such as
        /// oci-archive:FILE (pulled first)
        #[arg(long, value_name = "IMAGE")]
        rebase: Option<String>,
        /// Keep a new deployment that fails its health check
        #[arg(long)]
        no_rollback: bool,
        /// Seconds the new deployment may take to become healthy
        #[arg(long, default_value_t = 90)]
        timeout: u64,
    },
    /// Switch a container back to its previous deployment (again: forward)
    Rollback { name: String },
    /// Stop and remove a system container (its data directories stay)
    Uninstall { name: String },
    /// List installed system containers
    List {
        /// Also list containers that are not running
        #[arg(short, long)]
        all: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImagesCommand {
    /// List the images in the store
    List {
        /// Accepted for symmetry with later releases (layers)
        #[arg(short, long)]
        all: bool,
    },
    /// Show an image's labels and variables
    Info { image: String },
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Check an image definition's exports/ as an install would render it
    #[command(
        after_help = "Checks: read-only rootfs, terminal, mount option typos, $EXEC_START and \
WorkingDirectory=$DESTDIR in the unit, variables without defaults, hard-coded /var/lib and /run \
bind sources, templates that render to invalid JSON, units systemd-analyze rejects.\n\
Exits 1 when there is an error; warnings alone exit 0."
    )]
    Lint { dir: PathBuf },
}

impl Global {
    fn runtime_path(&self) -> String {
        if self.runtime.contains('/') {
            return self.runtime.clone();
        }
        std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(&self.runtime))
                    .find(|p| p.is_file())
            })
            .map(|p| p.to_string_lossy().to_string())
            .unwrap_or_else(|| self.runtime.clone())
    }

    /// Takes the state directory's lock for a command that changes the
    /// store or deployments, so two socle runs (an operator and cloud-init,
    /// say) never interleave. Waits, saying so, when another run holds it.
    fn lock(&self) -> anyhow::Result<std::fs::File> {
        use rustix::fs::{flock, FlockOperation};
        std::fs::create_dir_all(&self.state_dir)
            .with_context(|| format!("creating {}", self.state_dir.display()))?;
        let path = self.state_dir.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            eprintln!(
                "Waiting for another socle run to finish (lock: {})…",
                path.display()
            );
            flock(&file, FlockOperation::LockExclusive)
                .with_context(|| format!("locking {}", path.display()))?;
        }
        Ok(file)
    }

    fn store(&self) -> anyhow::Result<Store> {
        Ok(Store::open(&self.state_dir.join("repo"))?)
    }

    fn host(&self) -> anyhow::Result<Host> {
        Ok(Host {
            systemd: systemd::connect(self.systemd)?,
            ..self.host_without_systemd()
        })
    }
}

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

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let g = &cli.global;
    match &cli.command {
        Command::Pull { image, name } => {
            let _lock = g.lock()?;
            let source: ImageRef = image.parse()?;
            let name = name.as_deref().map(ImageName::parse).transpose()?;
            let store = g.store()?;
            let report = pull::pull(&store, &source, name.as_ref())?;
            if g.json {
                print_json(&report)?;
            } else {
                println!(
                    "Pulled {} ({}): {} layers imported, {} already present, {:.2} s",
                    report.image.name,
                    short_id(&report.image.id),
                    report.layers_imported,
                    report.layers_present,
                    report.seconds
                );
            }
        }
        Command::Images(ImagesCommand::List { all: _ }) => {
            let store = g.store()?;
            let images = store.images()?;
            #[derive(serde::Serialize)]
            struct Row {
                name: String,
                repository: String,
                tag: String,
                id: String,
                created: Option<String>,
                size: u64,
            }
            let rows: Vec<Row> = images
                .iter()
                .map(|i| {
                    Ok(Row {
                        name: i.name.to_string(),
                        repository: i.name.repository.clone(),
                        tag: i.name.tag.clone(),
                        id: i.id.clone(),
                        created: i.created.clone(),
                        size: store.image_size(i)?,
                    })
                })
                .collect::<anyhow::Result<_>>()?;
            if g.json {
                print_json(&rows)?;
            } else {
                print_table(
                    &["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
                    &rows
                        .iter()
                        .map(|r| {
                            vec![
                                r.repository.clone(),
                                r.tag.clone(),
                                short_id(&r.id).to_string(),
                                r.created.clone().unwrap_or_default(),
                                human_size(r.size),
                            ]
                        })
                        .collect::<Vec<_>>(),
                );
            }
        }
        Command::Images(ImagesCommand::Info { image }) => {
            let store = g.store()?;
            let host = g.host_without_systemd();
            let stored = store.image(image)?;
            let d = deploy::details_of(&host, &store, &stored)?;
            if g.json {
                print_json(&d)?;
            } else {
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
            }
        }
        Command::Image(ImageCommand::Lint { dir }) => {
            let findings = crate::lint::lint(dir)?;
            let errors = findings
                .iter()
                .filter(|f| f.severity == crate::lint::Severity::Error)
                .count();
            if g.json {
                print_json(&findings)?;
            } else {
                for f in &findings {
                    let level = match f.severity {
                        crate::lint::Severity::Error => "error",
                        crate::lint::Severity::Warning => "warning",
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
        }
        Command::Install {
            system: _,
            name,
            set,
            image,
        } => {
            let _lock = g.lock()?;
            let store = g.store()?;
            let host = g.host()?;
            let stored = store.image(image)?;
            let name = name.clone().unwrap_or_else(|| {
                stored
                    .name
                    .repository
                    .rsplit('/')
                    .next()
                    .unwrap_or("container")
                    .to_string()
            });
            let report = deploy::install(
                &host,
                &store,
                &InstallOptions {
                    name: &name,
                    image,
                    set,
                },
            )?;
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            if g.json {
                print_json(&report)?;
            } else {
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
                        deploy::unit_name(&name)
                    );
                }
            }
        }
        Command::Update {
            name,
            all,
            pull,
            set,
            rebase,
            no_rollback,
            timeout,
        } => {
            let _lock = g.lock()?;
            let store = g.store()?;
            let host = g.host()?;
            let timeout = std::time::Duration::from_secs(*timeout);
            if *all {
                return update_all(g, &host, &store, *pull, *no_rollback, timeout);
            }
            let name = name.as_deref().unwrap_or_default();
            let rebase = match rebase {
                Some(r) if ImageRef::looks_like_source(r) => Some(
                    pull::pull(&store, &r.parse()?, None)?
                        .image
                        .name
                        .to_string(),
                ),
                Some(r) => Some(r.clone()),
                None => None,
            };
            if *pull && rebase.is_none() {
                repull(&host, &store, name)?;
            }
            let report = deploy::update(
                &host,
                &store,
                &deploy::UpdateOptions {
                    name,
                    set,
                    rebase: rebase.as_deref(),
                    no_rollback: *no_rollback,
                    timeout,
                },
            )?;
            print_update(g, &report)?;
        }
        Command::Rollback { name } => {
            let _lock = g.lock()?;
            let host = g.host()?;
            let report = deploy::rollback(&host, name)?;
            print_update(g, &report)?;
        }
        Command::Uninstall { name } => {
            let _lock = g.lock()?;
            let host = g.host()?;
            let report = deploy::uninstall(&host, name)?;
            if g.json {
                print_json(&report)?;
            } else {
                println!("Uninstalled {name}.");
            }
        }
        Command::List { all } => {
            let host = g.host()?;
            let rows: Vec<_> = deploy::list(&host)?
                .into_iter()
                .filter(|r| *all || r.state == "running" || r.state == "unknown")
                .collect();
            if g.json {
                print_json(&rows)?;
            } else {
                print_table(
                    &["NAME", "IMAGE", "IMAGE ID", "STATE", "RUNTIME", "SLOT"],
                    &rows
                        .iter()
                        .map(|r| {
                            vec![
                                r.name.clone(),
                                r.image.clone(),
                                short_id(&r.image_id).to_string(),
                                r.state.clone(),
                                r.runtime.clone(),
                                r.slot.to_string(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                );
            }
        }
    }
    Ok(())
}

/// Pulls a container's image again from the source it was pulled from.
fn repull(host: &Host, store: &Store, name: &str) -> anyhow::Result<()> {
    let slot = host
        .current_slot(name)
        .with_context(|| format!("no container {name:?} is installed"))?;
    let image = store.image(&host.read_info(name, slot)?.image)?;
    let source = image.source.as_deref().with_context(|| {
        format!(
            "{} records no source to pull from; use --rebase SOURCE",
            image.name
        )
    })?;
    pull::pull(store, &source.parse()?, Some(&image.name))?;
    Ok(())
}

fn update_all(
    g: &Global,
    host: &Host,
    store: &Store,
    pull: bool,
    no_rollback: bool,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    #[derive(serde::Serialize)]
    struct Row {
        name: String,
        id_before: String,
        id_after: String,
        status: String,
    }
    let mut rows = Vec::new();
    let mut failed = 0;
    for name in host.installed()? {
        let outcome = (|| {
            if pull {
                repull(host, store, &name)?;
            }
            // With no new values, update changes only what has a newer image id.
            deploy::update(
                host,
                store,
                &deploy::UpdateOptions {
                    name: &name,
                    set: &[],
                    rebase: None,
                    no_rollback,
                    timeout,
                },
            )
        })();
        rows.push(match outcome {
            Ok(r) => Row {
                name,
                id_before: r.id_before,
                id_after: r.id_after,
                status: r.status,
            },
            Err(e) => {
                failed += 1;
                Row {
                    name,
                    id_before: String::new(),
                    id_after: String::new(),
                    status: format!("failed: {}", one_line(&e)),
                }
            }
        });
    }
    if g.json {
        print_json(&rows)?;
    } else {
        print_table(
            &["NAME", "ID BEFORE", "ID AFTER", "STATUS"],
            &rows
                .iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        short_id(&r.id_before).to_string(),
                        short_id(&r.id_after).to_string(),
                        r.status.clone(),
                    ]
                })
                .collect::<Vec<_>>(),
        );
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} containers failed to update", rows.len());
    }
    Ok(())
}

fn print_update(g: &Global, report: &deploy::UpdateReport) -> anyhow::Result<()> {
    if g.json {
        return print_json(report);
    }
    for m in &report.messages {
        eprintln!("note: {m}");
    }
    match report.status.as_str() {
        "up to date" => println!("Latest version already installed."),
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

impl Global {
    /// A host description for read-only commands that need no systemd.
    fn host_without_systemd(&self) -> Host {
        Host {
            state_dir: self.state_dir.clone(),
            unit_dir: self.unit_dir.clone(),
            tmpfiles_dir: self.tmpfiles_dir.clone(),
            host_root: self.host_root.clone(),
            runtime: self.runtime_path(),
            systemd: Box::new(systemd::NoSystemd),
        }
    }
}

/// An error chain as one line: causes joined by ": ", each only once (a
/// cause's text is often already part of its parent's message).
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Parses arguments, runs, and prints errors as one line.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SOCLE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
