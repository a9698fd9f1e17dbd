//! The command line: argument parsing and output (tables or `--json`).
//! Every command does its work through the library; this module only
//! translates in and out.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgAction, Args, Parser, Subcommand};

use crate::deploy::{self, Host, InstallOptions};
use crate::limits::Limits;
use crate::progress::{self, Progress};
use crate::pull::{self, PullOptions};
use crate::reference::{ImageName, ImageRef};
use crate::registry::{self, Credentials};
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
    after_help = "Typical session:\n  socle pull registry.example:5000/hello:1\n  socle install --name hello --set PORT=8081 hello:1\n  systemctl start hello\n  socle list\n  socle uninstall hello"
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
    /// Pull an image from a registry (or import a local one) into the store
    #[command(
        after_help = "IMAGE is one of:\n  [docker://]REGISTRY/REPO[:TAG|@DIGEST]  an image in a registry (the default transport)\n  NAME[:TAG]             an unqualified name, looked up in the unqualified-search-registries\n                         of /etc/socle/registries.toml or /etc/containers/registries.conf\n  oci:DIR[:REF]          an OCI image layout directory\n  oci-archive:FILE[:REF] a tar of an OCI image layout\n  docker-archive:FILE    a `docker save` tarball (named by its RepoTags)\n\nExamples:\n  socle pull quay.io/coreos/etcd:v3.5.17\n  socle pull --tls-verify=false 127.0.0.1:5000/team/etcd:3.4\n  socle pull --creds ops:secret --platform linux/arm64 registry.local/etcd:3.4\n  socle --json pull registry.local/etcd:3.4     # one JSON object per line\n\nCredentials come from --creds, else from the auth files podman, skopeo and docker\nlogin write ($REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,\n~/.config/containers/auth.json, ~/.docker/config.json). A pull that stops half way\nkeeps the layers it finished; pulling again fetches only the rest."
    )]
    Pull {
        image: String,
        /// Store the image under this NAME[:TAG] instead of the name the source gives
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
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
        /// Accept a --set of a variable the image does not have (a warning)
        #[arg(long)]
        force: bool,
        /// Refuse an image that asks for dangerous things (see `socle image lint`)
        #[arg(long, env = "SOCLE_DENY_DANGEROUS")]
        deny_dangerous: bool,
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
        /// Accept a --set of a variable the image does not have (a warning)
        #[arg(long)]
        force: bool,
        /// Refuse an image that asks for dangerous things (see `socle image lint`)
        #[arg(long, env = "SOCLE_DENY_DANGEROUS")]
        deny_dangerous: bool,
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
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Switch a container back to its previous deployment (again: forward)
    Rollback { name: String },
    /// Stop and remove a system container (its data directories stay)
    Uninstall { name: String },
    /// Check the store and the deployments, and repair them with --repair
    #[command(
        after_help = "Checks, in order: journals of operations a crash interrupted (finished, or undone for an\n\
install that never got its pointer), slot and staging directories no container owns (with\n\
the unit, tmpfiles and host files a removed container's slot left: recognized by their\n\
content, never by name alone), each container's pointer, unit, tmpfiles snippet and host\n\
files against its current slot, the store's layer refs, and every object of every image.\n\
Without --repair it only reports, and exits 1 when it found a problem. Files changed by\n\
hand are noted, never overwritten.\n\n\
Examples:\n  socle fsck\n  socle fsck --repair\n  socle --json fsck     # {\"findings\": [...], \"notes\": [...], ...}"
    )]
    Fsck {
        /// Repair what was found (damaged images are pulled again from their source)
        #[arg(long)]
        repair: bool,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// List installed system containers
    List {
        /// Also list containers that are not running
        #[arg(short, long)]
        all: bool,
    },
}

/// How to reach registries; shared by every command that may pull.
#[derive(Args, Debug, Clone)]
pub struct RegistryArgs {
    /// Platform to take from a multi-platform image (default: this host's)
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Registry credentials (default: the auth files podman, skopeo and docker write)
    #[arg(long, value_name = "USER:PASSWORD")]
    pub creds: Option<String>,
    /// Read registry credentials from this auth.json only
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Require HTTPS with a verified certificate; false also allows plain HTTP
    #[arg(
        long,
        value_name = "BOOL",
        env = "SOCLE_TLS_VERIFY",
        default_value_t = true,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub tls_verify: bool,
    /// The registries.conf to read (default: /etc/socle/registries.toml,
    /// else /etc/containers/registries.conf)
    #[arg(long, value_name = "FILE", env = "SOCLE_REGISTRIES_CONF")]
    pub registries_conf: Option<PathBuf>,
    /// Layers downloaded at once
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub jobs: u16,
    /// Raise or lower a limit on what an image may make socle read and
    /// unpack: layer-size (4G), image-size (8G), ratio (100, unpacked per
    /// compressed byte past ratio-after, 64M), layers (128), entries
    /// (1000000 per layer), path-length (4096), json-size (4M: an index,
    /// manifest or config)
    #[arg(
        long = "limit",
        value_name = "NAME=VALUE",
        env = "SOCLE_LIMITS",
        value_delimiter = ','
    )]
    pub limits: Vec<String>,
}

impl RegistryArgs {
    fn options(&self) -> anyhow::Result<registry::Options> {
        Ok(registry::Options {
            platform: self.platform.clone(),
            creds: self
                .creds
                .as_deref()
                .map(Credentials::from_flag)
                .transpose()?,
            authfile: self.authfile.clone(),
            insecure: !self.tls_verify,
            registries_conf: self.registries_conf.clone(),
        })
    }
}

/// Bars on a terminal, JSON lines with `--json`, otherwise quiet.
fn progress_for(g: &Global) -> Box<dyn Progress> {
    use std::io::IsTerminal;
    if g.json {
        Box::new(progress::JsonLines::default())
    } else if std::io::stderr().is_terminal() {
        Box::new(progress::Bars::default())
    } else {
        Box::new(progress::Quiet)
    }
}

/// Pulls `source` with the registry options and progress of this run.
fn pull_with(
    g: &Global,
    store: &Store,
    source: &ImageRef,
    name: Option<ImageName>,
    args: &RegistryArgs,
) -> anyhow::Result<pull::PullReport> {
    let progress = progress_for(g);
    pull::pull(
        store,
        source,
        &PullOptions {
            name,
            registry: args.options()?,
            jobs: args.jobs.into(),
            progress: progress.as_ref(),
            limits: Limits::parse(&args.limits).map_err(anyhow::Error::msg)?,
        },
    )
}

#[derive(Subcommand, Debug)]
pub enum ImagesCommand {
    /// List the images in the store, with what their layers share
    #[command(
        after_help = "SIZE is an image's unpacked size (all its layers); SHARED is the part in layers an\n\
image of another id also uses, stored once. The last lines compare what the store holds\n\
(every layer once) with what the images add up to. Deployments add no file data: their\n\
files are hardlinks into the store.\n\n\
Examples:\n  socle images list\n  socle images list -a          # the layers too, and which images use each\n  socle --json images list -a   # {\"images\": [...], \"layers\": [...]}"
    )]
    List {
        /// Also list the layers, with their size and the images using each
        #[arg(short, long)]
        all: bool,
    },
    /// Show an image's labels and variables
    Info { image: String },
    /// Give an image another name (same id, layers and source)
    #[command(
        after_help = "Examples:\n  socle images tag hello:1 hello:stable\n  socle images tag 3f2a91c0 registry.local/hello:1\n\nSRC is a name or the start of an id (see `socle images list`). If DST named another\nimage, it now names this one (as docker tag does) and socle says which it replaced."
    )]
    Tag {
        /// The image: NAME[:TAG] or the start of its id
        src: String,
        /// The new name: NAME[:TAG] (the tag defaults to latest)
        dst: String,
    },
    /// Delete image names, and the layers no other image uses
    #[command(
        after_help = "Examples:\n  socle images delete hello:1\n  socle images delete 3f2a91c0           # the one image whose id starts so\n  socle images delete --force 3f2a91c0   # ... under all its names\n\n\
An image an installed container uses (its current or its rollback deployment) is\nnot deleted unless --force: uninstall the container or update it to another image\nfirst. With --force the container keeps its files, and the store keeps the\nimage's layers for as long as a deployment uses them. An id prefix that starts\nseveral image ids is an error listing them. The layers no image or deployment uses\nany more are removed right away."
    )]
    Delete {
        /// NAME[:TAG], or the start of an image id (4 digits or more)
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
        /// Delete an image a container uses, or every name of an id
        #[arg(short, long)]
        force: bool,
    },
    /// Remove layers no image uses and slot directories no container owns
    #[command(
        after_help = "Removes the layers no image and no deployment uses, every store object nothing\n\
refers to any more, and slot directories (NAME.0, NAME.1, .NAME.N.staging) no\ninstalled container owns (left by a crash, or by hand). It never removes an image a\ncurrent or rollback deployment uses, nor anything of a container whose update or\nrollback was interrupted (`socle update NAME` or `socle rollback NAME` finishes it).\n\nExample:\n  socle images prune\n  socle --json images prune      # layers_removed, bytes_freed, slots_removed, ..."
    )]
    Prune,
    /// Check every file of an image against its checksum in the store
    #[command(
        after_help = "Re-checksums every object (files, directories, commit) of every layer of the\nimage and names each changed file with its layer. Exits 1 when something changed.\n\n\
Examples:\n  socle images verify hello:1\n  socle images verify --repair hello:1   # drop the damaged objects, pull the layers again\n\n\
Deployments share the store's files (hardlinks): a file changed in the store is\nchanged in the deployments of that image too; deploy them again after a repair."
    )]
    Verify {
        image: String,
        /// Remove the damaged objects and pull their layers again from the
        /// image's recorded source
        #[arg(long)]
        repair: bool,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Pull images again from the source each was pulled from
    #[command(
        after_help = "Examples:\n  socle images update hello:1\n  socle images update --all\n\n\
Prints NAME, ID BEFORE, ID AFTER and STATUS (updated, up to date, failed: why) for each\nimage and exits 1 if one failed. Containers move to a new id with `socle update`."
    )]
    #[command(group(clap::ArgGroup::new("which").required(true).args(["names", "all"])))]
    Update {
        /// Images to pull again (NAME[:TAG])
        names: Vec<String>,
        /// Every image in the store
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        registry: RegistryArgs,
    },
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
    /// Write directories as the layers of an OCI image, reproducibly
    #[command(
        after_help = "Entries are sorted by name, every mtime is --epoch (default: $SOURCE_DATE_EPOCH, else 0), owners are kept when run as root (root otherwise), gzip carries no timestamp: the same trees give the same digests. scripts/build-image --builder socle assembles the trees from an image definition (images/NAME/image.conf) and calls this.

Example:
  socle image pack --layer base/ --layer app/ --cmd /usr/bin/app --label version=2 -o oci-archive:/tmp/app.tar:2"
    )]
    Pack {
        /// A directory to become a layer; repeat, base first
        #[arg(long = "layer", value_name = "DIR", required = true)]
        layers: Vec<PathBuf>,
        /// The history comment of each layer, in the order of --layer
        #[arg(long = "comment", value_name = "TEXT")]
        comments: Vec<String>,
        /// One argument of the default command; repeat
        #[arg(long = "cmd", value_name = "ARG", allow_hyphen_values = true)]
        cmd: Vec<String>,
        /// One argument of the entrypoint; repeat
        #[arg(long = "entrypoint", value_name = "ARG", allow_hyphen_values = true)]
        entrypoint: Vec<String>,
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        #[arg(long, value_name = "DIR")]
        workdir: Option<String>,
        /// Seconds since 1970 for every mtime and the image's created date
        #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 0)]
        epoch: i64,
        /// oci-archive:FILE[:REF] or oci:DIR[:REF] (REF defaults to latest)
        #[arg(short = 'o', long = "output", value_name = "DEST")]
        output: String,
    },
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
        if let Some(old) = crate::permissions::private_dir(&self.state_dir)? {
            eprintln!(
                "note: {} had mode {old:04o}, which let other users reach the store; restricted it to 0700",
                self.state_dir.display()
            );
        }
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

    /// The state lock if no other socle run holds it (a read-only command
    /// uses it to recover what a crash left, and otherwise goes on).
    fn try_lock(&self) -> Option<std::fs::File> {
        use rustix::fs::{flock, FlockOperation};
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(self.state_dir.join("lock"))
            .ok()?;
        flock(&file, FlockOperation::NonBlockingLockExclusive).ok()?;
        Some(file)
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
        Command::Pull {
            image,
            name,
            registry,
        } => {
            let source: ImageRef = image.parse()?;
            let name = name.as_deref().map(ImageName::parse_new).transpose()?;
            let _lock = g.lock()?;
            let store = g.store()?;
            let report = pull_with(g, &store, &source, name, registry)?;
            if g.json {
                let mut v = serde_json::to_value(&report)?;
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
        }
        Command::Images(ImagesCommand::List { all }) => images_list(g, *all)?,
        Command::Images(ImagesCommand::Tag { src, dst }) => images_tag(g, src, dst)?,
        Command::Images(ImagesCommand::Delete { images, force }) => {
            images_delete(g, images, *force)?
        }
        Command::Images(ImagesCommand::Prune) => images_prune(g)?,
        Command::Images(ImagesCommand::Verify {
            image,
            repair,
            registry,
        }) => images_verify(g, image, *repair, registry)?,
        Command::Images(ImagesCommand::Update {
            names,
            all,
            registry,
        }) => images_update(g, names, *all, registry)?,
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
        Command::Image(ImageCommand::Pack {
            layers,
            comments,
            cmd,
            entrypoint,
            env,
            labels,
            workdir,
            epoch,
            output,
        }) => {
            let output = match output.parse::<ImageRef>() {
                Ok(ImageRef::OciArchive { path, reference }) => crate::builder::Output::Archive {
                    path,
                    reference: reference.unwrap_or_else(|| "latest".into()),
                },
                Ok(ImageRef::OciDir { path, reference }) => crate::builder::Output::Dir {
                    path,
                    reference: reference.unwrap_or_else(|| "latest".into()),
                },
                _ => anyhow::bail!(
                    "output {output:?}: expected oci-archive:FILE[:REF] or oci:DIR[:REF]"
                ),
            };
            let report = crate::builder::pack(
                &crate::builder::PackSpec {
                    layers: layers.clone(),
                    layer_comments: comments.clone(),
                    cmd: cmd.clone(),
                    entrypoint: entrypoint.clone(),
                    env: env.clone(),
                    labels: labels.clone(),
                    working_dir: workdir.clone(),
                    epoch: *epoch,
                },
                &output,
            )?;
            if g.json {
                print_json(&report)?;
            } else {
                for l in &report.layers {
                    println!(
                        "layer {} ({}, {} entries)",
                        l.digest,
                        human_size(l.size),
                        l.entries
                    );
                }
                println!("manifest {}", report.manifest_digest);
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
            force,
            deny_dangerous,
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
                    policy: deploy::Policy {
                        force: *force,
                        deny_dangerous: *deny_dangerous,
                    },
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
            force,
            deny_dangerous,
            rebase,
            no_rollback,
            timeout,
            registry,
        } => {
            let _lock = g.lock()?;
            let store = g.store()?;
            let host = g.host()?;
            let timeout = std::time::Duration::from_secs(*timeout);
            if *all {
                let repull = pull.then_some(registry);
                let policy = deploy::Policy {
                    force: false,
                    deny_dangerous: *deny_dangerous,
                };
                return update_all(g, &host, &store, repull, *no_rollback, timeout, policy);
            }
            let name = name.as_deref().unwrap_or_default();
            let rebase = match rebase {
                Some(r) if ImageRef::looks_like_source(r) => Some(
                    pull_with(g, &store, &r.parse()?, None, registry)?
                        .image
                        .name
                        .to_string(),
                ),
                Some(r) => Some(r.clone()),
                None => None,
            };
            if *pull && rebase.is_none() {
                repull(g, &host, &store, name, registry)?;
            }
            let report = deploy::update(
                &host,
                &store,
                &deploy::UpdateOptions {
                    name,
                    set,
                    policy: deploy::Policy {
                        force: *force,
                        deny_dangerous: *deny_dangerous,
                    },
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
                for m in &report.messages {
                    eprintln!("note: {m}");
                }
                for k in &report.kept {
                    eprintln!("note: kept {}: it was edited after install", k.display());
                }
                println!("Uninstalled {name}.");
            }
        }
        Command::Fsck { repair, registry } => fsck(g, *repair, registry)?,
        Command::List { all } => {
            let host = g.host()?;
            // Operations a crash interrupted are finished first, unless
            // another socle run is busy (then it may be one in progress).
            if let Some(_lock) = g.try_lock() {
                for m in deploy::recover_all(&host)? {
                    eprintln!("note: {m}");
                }
            }
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
fn repull(
    g: &Global,
    host: &Host,
    store: &Store,
    name: &str,
    args: &RegistryArgs,
) -> anyhow::Result<()> {
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
    pull_with(g, store, &source.parse()?, Some(image.name.clone()), args)?;
    Ok(())
}

fn update_all(
    g: &Global,
    host: &Host,
    store: &Store,
    repull_with: Option<&RegistryArgs>,
    no_rollback: bool,
    timeout: std::time::Duration,
    policy: deploy::Policy,
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
            if let Some(args) = repull_with {
                repull(g, host, store, &name, args)?;
            }
            // With no new values, update changes only what has a newer image id.
            deploy::update(
                host,
                store,
                &deploy::UpdateOptions {
                    name: &name,
                    set: &[],
                    policy,
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
        print_id_changes(
            rows.iter()
                .map(|r| (&r.name, &r.id_before, &r.id_after, &r.status)),
        );
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} containers failed to update", rows.len());
    }
    Ok(())
}

/// The summary table of `update --all` and `images update`.
fn print_id_changes<'a>(
    rows: impl Iterator<Item = (&'a String, &'a String, &'a String, &'a String)>,
) {
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

// ---- images: the store's life cycle -----------------------------------------

/// The image commits the current and rollback deployments use: garbage
/// collection keeps them even when no name points at them any more.
fn held_by_deployments(host: &Host) -> anyhow::Result<Vec<crate::store::Held>> {
    Ok(host
        .deployments()?
        .into_iter()
        .map(|d| crate::store::Held {
            by: d.describe(),
            commit: d.store_commit,
        })
        .collect())
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn images_list(g: &Global, all: bool) -> anyhow::Result<()> {
    let store = g.store()?;
    let usage = store.disk_usage(&held_by_deployments(&g.host_without_systemd())?)?;
    #[derive(serde::Serialize)]
    struct Row {
        name: String,
        repository: String,
        tag: String,
        id: String,
        created: Option<String>,
        size: u64,
        own_size: u64,
        shared_size: u64,
        layers: Vec<String>,
    }
    let rows: Vec<Row> = usage
        .images
        .iter()
        .map(|u| Row {
            name: u.image.name.to_string(),
            repository: u.image.name.repository.clone(),
            tag: u.image.name.tag.clone(),
            id: u.image.id.clone(),
            created: u.image.created.clone(),
            size: u.size,
            own_size: u.own_size(),
            shared_size: u.shared_size,
            layers: u.image.layers.clone(),
        })
        .collect();
    if g.json {
        // Without -a, the plain array scripts already parse.
        return if all {
            print_json(&serde_json::json!({ "images": rows, "layers": usage.layers }))
        } else {
            print_json(&rows)
        };
    }
    print_table(
        &["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED"],
        &rows
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

fn images_tag(g: &Global, src: &str, dst: &str) -> anyhow::Result<()> {
    let dst_name = ImageName::parse(dst).with_context(|| {
        format!("invalid new name {dst:?}: give NAME[:TAG], such as hello:stable")
    })?;
    let _lock = g.lock()?;
    let store = g.store()?;
    let image = store.image(src)?;
    let before = store.image_by_name(&dst_name)?;
    let unchanged = before.as_ref().is_some_and(|b| b.id == image.id);
    let (tagged, replaced) = store.tag(&image, &dst_name)?;
    if g.json {
        return print_json(&serde_json::json!({
            "name": tagged.name.to_string(),
            "id": tagged.id,
            "from": image.name.to_string(),
            "changed": !unchanged,
            "replaced": replaced
                .as_ref()
                .map(|r| serde_json::json!({ "name": r.name.to_string(), "id": r.id })),
        }));
    }
    if unchanged {
        println!(
            "{} already names {} ({}); nothing changed.",
            tagged.name,
            image.name,
            short_id(&image.id)
        );
    } else if let Some(r) = &replaced {
        println!(
            "Tagged {} ({}) as {}, which named {} before (`socle images prune` frees what no image uses).",
            image.name,
            short_id(&image.id),
            tagged.name,
            short_id(&r.id)
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

/// The names `arg` designates for `images delete`: an exact name, else the
/// names of the one image whose id starts with `arg`.
fn names_to_delete(
    store: &Store,
    arg: &str,
    force: bool,
) -> anyhow::Result<Vec<crate::store::StoredImage>> {
    if let Ok(name) = ImageName::parse(arg) {
        if let Some(image) = store.image_by_name(&name)? {
            return Ok(vec![image]);
        }
    }
    let hex = arg.strip_prefix("sha256:").unwrap_or(arg);
    let matches = if hex.len() >= 4 {
        store.images_with_id_prefix(arg)?
    } else {
        Vec::new()
    };
    let mut by_id: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for i in &matches {
        by_id
            .entry(i.id.clone())
            .or_default()
            .push(i.name.to_string());
    }
    match by_id.len() {
        0 => anyhow::bail!(
            "no image {arg:?} in the store: give a name (NAME[:TAG]) or at least 4 digits of an id (see `socle images list`)"
        ),
        1 => {}
        n => anyhow::bail!(
            "{arg:?} is ambiguous: it starts {n} image ids: {}; give more digits or a name; nothing was deleted",
            by_id
                .iter()
                .map(|(id, names)| format!("{} ({})", short_id(id), names.join(", ")))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    if matches.len() > 1 && !force {
        anyhow::bail!(
            "{arg:?} is image {} under {} names ({}); delete one name, or pass --force to delete them all; nothing was deleted",
            short_id(&matches[0].id),
            matches.len(),
            matches
                .iter()
                .map(|i| i.name.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(matches)
}

fn images_delete(g: &Global, args: &[String], force: bool) -> anyhow::Result<()> {
    let _lock = g.lock()?;
    let store = g.store()?;
    let host = g.host_without_systemd();
    let mut doomed: Vec<crate::store::StoredImage> = Vec::new();
    for arg in args {
        for image in names_to_delete(&store, arg, force)? {
            if !doomed.iter().any(|d| d.name == image.name) {
                doomed.push(image);
            }
        }
    }
    let doomed_names: Vec<String> = doomed.iter().map(|d| d.name.to_string()).collect();
    // Ids still named after the delete stay usable by deployments.
    let remaining_ids: std::collections::BTreeSet<String> = store
        .images()?
        .into_iter()
        .filter(|i| !doomed_names.contains(&i.name.to_string()))
        .map(|i| i.id)
        .collect();
    let deployments = host.deployments()?;
    let users: Vec<(String, &deploy::SlotUse)> = deployments
        .iter()
        .filter_map(|d| {
            let by_name = doomed.iter().find(|i| i.name.to_string() == d.image);
            let by_id = doomed
                .iter()
                .find(|i| i.id == d.image_id && !remaining_ids.contains(&i.id));
            by_name.or(by_id).map(|i| (i.name.to_string(), d))
        })
        .collect();
    if !users.is_empty() && !force {
        let (image, d) = &users[0];
        let others = if users.len() > 1 {
            format!(" (and {} more deployments)", users.len() - 1)
        } else {
            String::new()
        };
        anyhow::bail!(
            "{image} is used by {}{others}: uninstall {} or update it to another image first, or pass --force to delete the name anyway (the container keeps its files, and the store keeps the image's layers while it uses them); nothing was deleted",
            d.describe(),
            d.container
        );
    }
    for image in &doomed {
        store.remove_name(&image.name)?;
    }
    let their_layers: Vec<String> = doomed.iter().flat_map(|i| i.layers.clone()).collect();
    let gc = store.collect_garbage(&held_by_deployments(&host)?, Some(&their_layers))?;
    if g.json {
        return print_json(&serde_json::json!({
            "deleted": doomed
                .iter()
                .map(|i| serde_json::json!({ "name": i.name.to_string(), "id": i.id }))
                .collect::<Vec<_>>(),
            "still_used_by": users
                .iter()
                .map(|(image, d)| serde_json::json!({ "image": image, "container": d.container, "slot": d.slot, "current": d.current }))
                .collect::<Vec<_>>(),
            "gc": gc,
        }));
    }
    for image in &doomed {
        println!("Deleted {} ({}).", image.name, short_id(&image.id));
    }
    for (image, d) in &users {
        println!(
            "{image} was in use by {}: it keeps its files, and the store keeps the image's layers until it no longer uses them.",
            d.describe()
        );
    }
    print_gc(&gc);
    Ok(())
}

fn print_gc(gc: &crate::store::GcReport) {
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

fn images_prune(g: &Global) -> anyhow::Result<()> {
    let _lock = g.lock()?;
    let store = g.store()?;
    let host = g.host_without_systemd();
    let mut slots_removed = Vec::new();
    for dir in host.orphan_slots()? {
        deploy::fsops::remove_any(&dir).with_context(|| format!("removing {}", dir.display()))?;
        slots_removed.push(dir);
    }
    if !slots_removed.is_empty() {
        deploy::fsops::sync_dir(&host.containers_dir())?;
    }
    crate::failpoint::failpoint("prune:after-slots");
    let gc = store.collect_garbage(&held_by_deployments(&host)?, None)?;
    if g.json {
        let mut v = serde_json::to_value(&gc)?;
        v["slots_removed"] = serde_json::to_value(&slots_removed)?;
        return print_json(&v);
    }
    print_gc(&gc);
    for s in &slots_removed {
        println!("Removed {}: no installed container owns it.", s.display());
    }
    Ok(())
}

fn images_verify(
    g: &Global,
    image: &str,
    repair: bool,
    registry: &RegistryArgs,
) -> anyhow::Result<()> {
    let _lock = g.lock()?;
    let store = g.store()?;
    let host = g.host_without_systemd();
    let stored = store.image(image)?;
    let report = store.verify(&stored)?;
    let users: Vec<String> = host
        .deployments()?
        .into_iter()
        .filter(|d| d.image_id == stored.id)
        .map(|d| d.describe())
        .collect();
    let print_damage = |report: &crate::store::VerifyReport| {
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
    };
    if report.damaged.is_empty() {
        if g.json {
            return print_json(&report);
        }
        println!(
            "{} ({}): {}, {} objects checked, all intact.",
            stored.name,
            short_id(&stored.id),
            plural(report.layers, "layer", "layers"),
            report.objects_checked
        );
        return Ok(());
    }
    let in_use = if users.is_empty() {
        String::new()
    } else {
        format!(
            "; {} use it and share the changed files (hardlinks): deploy them again after the repair",
            users.join(", ")
        )
    };
    if !repair {
        if g.json {
            print_json(&report)?;
        } else {
            print_damage(&report);
        }
        anyhow::bail!(
            "{}: {} changed in the store{in_use}; repair with `socle images verify --repair {}` (pulls the damaged layers again from {})",
            stored.name,
            plural(report.damaged.len(), "object", "objects"),
            stored.name,
            stored.source.as_deref().unwrap_or("its source: none is recorded, so `socle pull SOURCE --name NAME` after the repair")
        );
    }
    let Some(source) = stored.source.clone() else {
        anyhow::bail!(
            "{}: {} changed, and the image records no source to pull it again from; delete it (`socle images delete --force {}`) and pull it again",
            stored.name,
            plural(report.damaged.len(), "object", "objects"),
            stored.name
        );
    };
    let (layers, pulled, after) = repair_image(g, &store, &stored, &source, &report, registry)?;
    if g.json {
        return print_json(&serde_json::json!({
            "damaged": report.damaged,
            "layers_pulled_again": layers,
            "after": after,
        }));
    }
    print_damage(&report);
    println!(
        "Pulled {} again from {source} ({} layers); now: {} damaged.",
        stored.name,
        layers.len(),
        after.damaged.len()
    );
    if pulled.image.id != stored.id {
        println!(
            "note: {source} now holds another image ({}); {} names it.",
            short_id(&pulled.image.id),
            stored.name
        );
    }
    if !users.is_empty() {
        println!(
            "{} share the changed files (hardlinks): deploy them again (uninstall and install, or update to another image and back).",
            users.join(", ")
        );
    }
    if !after.damaged.is_empty() {
        anyhow::bail!("{}: still damaged after the repair", stored.name);
    }
    Ok(())
}

/// Forgets the damaged objects `report` found in `stored` and pulls its
/// layers again from `source`. Returns the layers pulled again, the pull and
/// a verify of the result.
fn repair_image(
    g: &Global,
    store: &Store,
    stored: &crate::store::StoredImage,
    source: &str,
    report: &crate::store::VerifyReport,
    registry: &RegistryArgs,
) -> anyhow::Result<(Vec<String>, pull::PullReport, crate::store::VerifyReport)> {
    let source: ImageRef = source.parse()?;
    let layers = store.forget_damaged(report)?;
    let pulled = pull_with(g, store, &source, Some(stored.name.clone()), registry)
        .with_context(|| {
            format!(
                "repairing {}: the damaged layers were removed but pulling them again failed; run `socle pull {source} --name {}` when it is reachable",
                stored.name, stored.name
            )
        })?;
    let after = store.verify(&pulled.image)?;
    Ok((layers, pulled, after))
}

/// `socle fsck [--repair]`.
fn fsck(g: &Global, repair: bool, registry: &RegistryArgs) -> anyhow::Result<()> {
    let _lock = g.lock()?;
    let store = g.store()?;
    let host = g.host()?;
    let mut report = crate::fsck::check(&host, &store, repair)?;
    if repair {
        let damaged = std::mem::take(&mut report.damaged);
        for (image, verify) in &damaged {
            let name = image.name.to_string();
            let outcome = match image.source.as_deref() {
                None => Err(anyhow::anyhow!(
                    "no source is recorded: delete it (`socle images delete --force {name}`) and pull it again"
                )),
                Some(source) => repair_image(g, &store, image, source, verify, registry)
                    .and_then(|(_, _, after)| match after.damaged.len() {
                        0 => Ok(()),
                        n => Err(anyhow::anyhow!("{n} objects still damaged after pulling again")),
                    }),
            };
            for f in report
                .findings
                .iter_mut()
                .filter(|f| f.kind == "image" && f.subject == name)
            {
                match &outcome {
                    Ok(()) => f.repaired = true,
                    Err(e) => f.fix = format!("{}; repair failed: {}", f.fix, one_line(e)),
                }
            }
        }
    }
    let clean = report.clean();
    if g.json {
        let mut v = serde_json::to_value(&report)?;
        v["clean"] = clean.into();
        print_json(&v)?;
    } else {
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
    }
    if !clean {
        let unrepaired = report.findings.iter().filter(|f| !f.repaired).count();
        if repair {
            anyhow::bail!("{unrepaired} problems could not be repaired (see above)");
        }
        anyhow::bail!("{unrepaired} problems found; `socle fsck --repair` repairs them");
    }
    Ok(())
}

fn images_update(
    g: &Global,
    names: &[String],
    all: bool,
    registry: &RegistryArgs,
) -> anyhow::Result<()> {
    // Parse every name before changing anything.
    let wanted: Vec<ImageName> = names
        .iter()
        .map(|n| {
            ImageName::parse(n).with_context(|| {
                format!("invalid image name {n:?}: give NAME[:TAG] as `socle images list` shows it")
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let _lock = g.lock()?;
    let store = g.store()?;
    let images: Vec<crate::store::StoredImage> = if all {
        store.images()?
    } else {
        let mut v = Vec::new();
        for n in &wanted {
            v.push(store.image_by_name(n)?.with_context(|| {
                format!("no image {n} in the store (see `socle images list`); nothing was pulled")
            })?);
        }
        v
    };
    #[derive(serde::Serialize)]
    struct Row {
        name: String,
        source: Option<String>,
        id_before: String,
        id_after: String,
        status: String,
    }
    let mut rows = Vec::new();
    let mut failed = 0;
    for image in images {
        let mut row = Row {
            name: image.name.to_string(),
            source: image.source.clone(),
            id_before: image.id.clone(),
            id_after: String::new(),
            status: String::new(),
        };
        let outcome = (|| -> anyhow::Result<String> {
            let source = image.source.as_deref().with_context(|| {
                format!(
                    "no recorded source; pull it with `socle pull SOURCE --name {}`",
                    image.name
                )
            })?;
            let report = pull_with(
                g,
                &store,
                &source.parse()?,
                Some(image.name.clone()),
                registry,
            )?;
            Ok(report.image.id)
        })();
        match outcome {
            Ok(id) => {
                row.status = if id == image.id {
                    "up to date"
                } else {
                    "updated"
                }
                .into();
                row.id_after = id;
            }
            Err(e) => {
                failed += 1;
                row.status = format!("failed: {}", one_line(&e));
            }
        }
        rows.push(row);
    }
    if g.json {
        print_json(&rows)?;
    } else {
        print_id_changes(
            rows.iter()
                .map(|r| (&r.name, &r.id_before, &r.id_after, &r.status)),
        );
        if rows.iter().any(|r| r.status == "updated") {
            println!("Containers pick the new images up with `socle update NAME` (or --all); `socle images prune` frees what no image uses any more.");
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} images failed to update", rows.len());
    }
    Ok(())
}
