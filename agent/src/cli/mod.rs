//! The command line: parses arguments, calls one operation of
//! [`socle::node::Node`] and prints its report as text or `--json`. It holds
//! no domain decision; those live in the library's `node` module, shared by
//! every front.

mod args;
mod output;
mod progress;

use std::path::PathBuf;
use std::time::Duration;

use clap::FromArgMatches;

use args::{Cli, Command, Global, ImageCommand, ImagesCommand, RegistryArgs, SystemdArg};
use socle::node::{
    one_line, ApplyRequest, Credentials, ImageName, ImageRef, InstallRequest, Limits, Node,
    NodeConfig, PackSpec, Policy, Progress, PullSettings, RegistryOptions, SystemdMode,
    UninstallRequest, UpdateRequest, DECLARATION_DIRS,
};

impl Global {
    fn node_config(&self) -> NodeConfig {
        NodeConfig {
            state_dir: self.state_dir.clone(),
            unit_dir: self.unit_dir.clone(),
            tmpfiles_dir: self.tmpfiles_dir.clone(),
            host_root: self.host_root.clone(),
            systemd: match self.systemd {
                SystemdArg::System => SystemdMode::System,
                SystemdArg::User => SystemdMode::User,
                SystemdArg::None => SystemdMode::None,
            },
            runtime: self.runtime.clone(),
        }
    }

    /// Bars on a terminal, JSON lines with `--json`, otherwise only notes.
    fn progress(&self) -> Box<dyn Progress> {
        use std::io::IsTerminal;
        if self.json {
            Box::new(progress::JsonLines::default())
        } else if std::io::stderr().is_terminal() {
            Box::new(progress::Bars::default())
        } else {
            Box::new(progress::Plain)
        }
    }
}

impl RegistryArgs {
    fn settings(&self) -> anyhow::Result<PullSettings> {
        Ok(PullSettings {
            registry: RegistryOptions {
                platform: self.platform.clone(),
                creds: self
                    .creds
                    .as_deref()
                    .map(Credentials::from_flag)
                    .transpose()?,
                authfile: self.authfile.clone(),
                insecure: !self.tls_verify,
                registries_conf: self.registries_conf.clone(),
            },
            jobs: self.jobs.into(),
            limits: Limits::parse(&self.limits).map_err(anyhow::Error::msg)?,
        })
    }
}

/// Runs one command: translate, call, print. An `Err` is the command's failure.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let g = &cli.global;
    let json = g.json;
    let node = Node::new(g.node_config(), g.progress());
    match &cli.command {
        Command::Pull {
            image,
            name,
            registry,
        } => {
            let source: ImageRef = image.parse()?;
            let name = name.as_deref().map(ImageName::parse_new).transpose()?;
            let report = node.pull(&source, name, &registry.settings()?)?;
            output::pulled(json, &report)
        }
        Command::Images(command) => images(&node, json, command),
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
            let spec = PackSpec {
                layers: layers.clone(),
                layer_comments: comments.clone(),
                cmd: cmd.clone(),
                entrypoint: entrypoint.clone(),
                env: env.clone(),
                labels: labels.clone(),
                working_dir: workdir.clone(),
                epoch: *epoch,
            };
            output::packed(json, &socle::node::pack(&spec, output)?)
        }
        Command::Image(ImageCommand::Lint { dir }) => {
            output::linted(json, dir, &socle::node::lint(dir)?)
        }
        Command::Install {
            system: _,
            name,
            set,
            force,
            deny_dangerous,
            image,
        } => {
            let report = node.install(&InstallRequest {
                image: image.clone(),
                name: name.clone(),
                set: set.clone(),
                policy: Policy {
                    force: *force,
                    deny_dangerous: *deny_dangerous,
                },
            })?;
            output::installed(json, &report)
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
            let timeout = Duration::from_secs(*timeout);
            let settings = registry.settings()?;
            if *all {
                let policy = Policy {
                    force: false,
                    deny_dangerous: *deny_dangerous,
                };
                let report =
                    node.update_all(pull.then_some(&settings), *no_rollback, timeout, policy)?;
                output::updated_all(json, &report)?;
                return failed_if(report.failure());
            }
            let report = node.update(
                &UpdateRequest {
                    name: name.clone().unwrap_or_default(),
                    set: set.clone(),
                    policy: Policy {
                        force: *force,
                        deny_dangerous: *deny_dangerous,
                    },
                    rebase: rebase.clone(),
                    pull: *pull,
                    no_rollback: *no_rollback,
                    timeout,
                },
                &settings,
            )?;
            output::updated(json, &report)
        }
        Command::Rollback { name } => output::updated(json, &node.rollback(name)?),
        Command::Uninstall { name } => {
            let report = node.uninstall(&UninstallRequest { name: name.clone() })?;
            output::uninstalled(json, name, &report)
        }
        Command::Fsck { repair, registry } => {
            let report = node.fsck(*repair, &registry.settings()?)?;
            output::checked(json, *repair, &report)?;
            failed_if(report.failure(*repair))
        }
        Command::Apply {
            dry_run,
            offline,
            dirs,
            timeout,
            registry,
        } => {
            let request = ApplyRequest {
                dirs: declaration_dirs(dirs),
                dry_run: *dry_run,
                offline: *offline,
                timeout: Duration::from_secs(*timeout),
            };
            let report = node.apply(&request, &registry.settings()?)?;
            output::applied(json, &report)?;
            failed_if(report.failure())
        }
        Command::Status { dirs } => output::status(json, &node.status(&declaration_dirs(dirs))?),
        Command::List { all } => output::listed(json, &node.list(*all)?),
    }
}

/// The error a command ends with when its report says it failed (after
/// the report was printed).
fn failed_if(failure: Option<String>) -> anyhow::Result<()> {
    failure.map_or(Ok(()), |e| Err(anyhow::Error::msg(e)))
}

/// `--dir` as given, else the default containers.d directories.
fn declaration_dirs(dirs: &[PathBuf]) -> Vec<PathBuf> {
    if dirs.is_empty() {
        DECLARATION_DIRS.iter().map(PathBuf::from).collect()
    } else {
        dirs.to_vec()
    }
}

fn images(node: &Node, json: bool, command: &ImagesCommand) -> anyhow::Result<()> {
    match command {
        ImagesCommand::List { all } => output::images_listed(json, *all, &node.images_list()?),
        ImagesCommand::Info { image } => output::image_info(json, &node.image_info(image)?),
        ImagesCommand::Tag { src, dst } => output::tagged(json, &node.images_tag(src, dst)?),
        ImagesCommand::Delete { images, force } => {
            output::deleted(json, &node.images_delete(images, *force)?)
        }
        ImagesCommand::Prune => output::pruned(json, &node.images_prune()?),
        ImagesCommand::Verify {
            image,
            repair,
            registry,
        } => {
            let outcome = node.images_verify(image, *repair, &registry.settings()?)?;
            output::verified(json, &outcome)?;
            failed_if(outcome.failure())
        }
        ImagesCommand::Update {
            names,
            all,
            registry,
        } => {
            let report = node.images_update(names, *all, &registry.settings()?)?;
            output::images_updated(json, &report)?;
            failed_if(report.failure())
        }
    }
}

/// Parses arguments, runs, and prints errors as one line.
pub fn main() -> std::process::ExitCode {
    let cli = match Cli::from_arg_matches(&args::command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
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
