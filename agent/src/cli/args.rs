//! The command line's arguments: what `socle --help` shows. Options every
//! command takes are declared once, in [`Global`], under their own heading.

use std::path::PathBuf;

use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand, ValueEnum};

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
#[command(next_help_heading = "Global options")]
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
    pub systemd: SystemdArg,
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
    #[command(
        subcommand,
        after_help = "Examples:\n  socle images list\n  socle images info hello:1\n  socle images delete hello:1\n  socle images prune"
    )]
    Images(ImagesCommand),
    /// Work on image definitions (a directory holding exports/)
    #[command(
        subcommand,
        after_help = "Examples:\n  socle image lint images/greeter\n  socle image pack --layer rootfs/ --cmd /usr/bin/app -o oci-archive:/tmp/app.tar:1"
    )]
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
    #[command(
        after_help = "Example:\n  socle rollback web\n\nThe previous slot keeps its own image, values and files. A service that was running,\nor failing, is started on the previous deployment; one you stopped stays stopped."
    )]
    Rollback { name: String },
    /// Stop and remove a system container (its data directories stay)
    #[command(
        after_help = "Example:\n  socle uninstall web\n\nRemoves the unit, the tmpfiles snippet, the host files the image installed (a file\nedited since is kept, and named) and both slots. Data directories stay."
    )]
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
    /// Make the node what the containers.d declarations say
    #[command(
        after_help = "Reads NAME.toml from each directory (default: /etc/socle/containers.d, then\n\
/run/socle/containers.d, then /usr/lib/socle/containers.d: the first that has a name wins;\n\
an empty file or a link to /dev/null masks it), checks them all, prints the plan\n\
(+ install, ~ update, - uninstall, = unchanged, ! a declaration left out) and carries it\n\
out in dependency order. Updates are health-gated and roll back on failure. Only\n\
containers apply installed are ever updated or removed. See docs/declarations.md.\n\n\
Examples:\n  socle apply --dry-run\n  socle apply\n  socle apply --offline --dir /srv/node/containers.d"
    )]
    Apply {
        /// Print the plan and change nothing
        #[arg(long)]
        dry_run: bool,
        /// Never pull: use the store and the declared seed archives only
        #[arg(long)]
        offline: bool,
        /// A containers.d directory to read instead of the defaults; repeat, most important first
        #[arg(
            long = "dir",
            value_name = "DIR",
            env = "SOCLE_CONTAINERS_DIRS",
            value_delimiter = ':'
        )]
        dirs: Vec<PathBuf>,
        /// Seconds an updated deployment may take to become healthy
        #[arg(long, default_value_t = 90)]
        timeout: u64,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// The node on one screen: containers, deployments, last operations, drift
    #[command(
        after_help = "Shows every container, declared (containers.d) or installed: its image and id in the\n\
current and the rollback slot, its state, the last operation with its result and time,\n\
and drift: declared but not installed, installed by apply but no longer declared, values\n\
or image that differ from the declaration. Exits 0; `--json` for machines.\n\n\
Examples:\n  socle status\n  socle --json status | jq '.containers[] | select(.drift != [])'"
    )]
    Status {
        /// A containers.d directory to read instead of the defaults; repeat, most important first
        #[arg(
            long = "dir",
            value_name = "DIR",
            env = "SOCLE_CONTAINERS_DIRS",
            value_delimiter = ':'
        )]
        dirs: Vec<PathBuf>,
    },
    /// List installed system containers
    #[command(
        after_help = "Examples:\n  socle list\n  socle list --all          # stopped and failed containers too\n  socle --json list -a      # [{\"name\": ..., \"state\": ..., ...}]"
    )]
    List {
        /// Also list containers that are not running
        #[arg(short, long)]
        all: bool,
    },
}

/// How to reach registries; shared by every command that may pull.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Registry options")]
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
    #[command(
        after_help = "Examples:\n  socle images info hello:1\n  socle --json images info 3f2a91c0\n\nThe variables are what `socle install --set VAR=VALUE` can change."
    )]
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
Exits 1 when there is an error; warnings alone exit 0.\n\n\
Example:\n  socle image lint images/greeter"
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

/// Which systemd to talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SystemdArg {
    System,
    User,
    None,
}

/// The command line as clap builds it, with the global options listed once:
/// in `socle --help`, not again in every subcommand's help. Each subcommand
/// gets a hidden copy of them (still global, so they are accepted after
/// the subcommand too and their values reach [`Global`]); clap copies a
/// global option only into subcommands that lack one of that name.
pub fn command() -> clap::Command {
    let cmd = Cli::command();
    let globals: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set())
        .cloned()
        .collect();
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    names.into_iter().fold(cmd, |cmd, name| {
        cmd.mut_subcommand(name, |sub| {
            let sub = globals
                .iter()
                .fold(sub, |sub, a| sub.arg(a.clone().hide(true)));
            with_globals_note(sub)
        })
    })
}

/// Says where the global options are, in a command's help and its
/// subcommands'.
fn with_globals_note(cmd: clap::Command) -> clap::Command {
    let help = match cmd.get_after_help() {
        Some(h) => format!("{h}\n\n{GLOBALS_NOTE}"),
        None => GLOBALS_NOTE.to_string(),
    };
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    names.into_iter().fold(cmd.after_help(help), |cmd, name| {
        cmd.mut_subcommand(name, with_globals_note)
    })
}

const GLOBALS_NOTE: &str = "Global options (--state-dir, --unit-dir, --tmpfiles-dir, --host-root, --systemd,\n--runtime, --json) go before or after the command: see `socle --help`.";
