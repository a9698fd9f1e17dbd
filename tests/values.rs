//! Tier 2: values and dangerous images, end to end through the socle binary.
//! Images are image definitions written here and packed by `socle image
//! pack`; installs go to a temporary host root, where the real
//! systemd-tmpfiles creates what the rendered lines say.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{oci_archive, path_str, Socle};
use serde_json::Value;

/// An image definition: `files` under `exports/`, packed as `NAME:1`.
struct Image {
    def: tempfile::TempDir,
    archive: PathBuf,
}

const CONFIG: &str = r#"{
  "ociVersion": "1.0.2",
  "root": {"path": "rootfs", "readonly": true},
  "hostname": "$HOST_NAME",
  "process": {"args": ["/bin/greet", "--greeting=$GREETING"], "cwd": "/",
              "env": ["GREETING=$GREETING"]},
  "mounts": [MOUNTS],
  "linux": {"resources": {"devices": [DEVICES]}}
}
"#;

const UNIT: &str = "[Unit]\nDescription=greeter $GREETING\n\n[Service]\nExecStartPre=/bin/echo $GREETING\nExecStart=$EXEC_START\nExecStop=$EXEC_STOP\nWorkingDirectory=$DESTDIR\n\n[Install]\nWantedBy=multi-user.target\n";

const TMPFILES: &str = "d ${STATE_DIRECTORY}/$DIR 0755 - - -\nf ${STATE_DIRECTORY}/$DIR/greeting 0644 - - - $GREETING\n";

const MANIFEST: &str =
    r#"{"defaultValues": {"GREETING": "hello", "HOST_NAME": "greeter", "DIR": "greeter"}}"#;

fn config(mounts: &str, devices: &str) -> String {
    CONFIG.replace("MOUNTS", mounts).replace("DEVICES", devices)
}

impl Image {
    fn new(s: &Socle, name: &str, files: &[(&str, &str)]) -> Image {
        let def = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = def.path().join("exports").join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        let archive = s.inputs().join(format!("{name}.tar"));
        s.ok(&[
            "image",
            "pack",
            "--layer",
            &path_str(def.path()),
            "-o",
            &format!("oci-archive:{}:1", archive.display()),
        ]);
        Image { def, archive }
    }

    /// The greeter: a value in JSON strings, a unit and tmpfiles lines.
    fn greeter(s: &Socle) -> Image {
        Image::new(
            s,
            "greeter",
            &[
                ("manifest.json", MANIFEST),
                ("config.json.template", &config("", "")),
                ("service.template", UNIT),
                ("tmpfiles.template", TMPFILES),
            ],
        )
    }

    fn pull(&self, s: &Socle, name: &str) {
        s.ok(&["pull", "--name", name, &oci_archive(&self.archive)]);
    }
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap()
}

const HOSTILE: &str = r#"he said "hi", \o/ 100% $HOME 'x' ; a	tab"#;

#[test]
fn set_values_reach_every_file_as_they_were_given() {
    let s = Socle::new();
    Image::greeter(&s).pull(&s, "greeter:1");
    s.ok(&[
        "install",
        "--name",
        "g",
        "--set",
        &format!("GREETING={HOSTILE}"),
        "--set",
        r#"HOST_NAME=evil", "hostname": "x"#,
        "--set",
        "DIR=my dir \"q\" 100%",
        "greeter:1",
    ]);
    let slot = s.slot("g", 0);
    let config = read_json(&slot.join("config.json"));
    assert_eq!(config["process"]["env"][0], format!("GREETING={HOSTILE}"));
    assert_eq!(
        config["process"]["args"][1],
        format!("--greeting={HOSTILE}")
    );
    assert_eq!(config["hostname"], r#"evil", "hostname": "x"#);
    // The real systemd-tmpfiles, run by install, made the directory and file asked for.
    let greeting = s.on_host("/var/lib/my dir \"q\" 100%/greeting");
    assert_eq!(fs::read_to_string(&greeting).unwrap(), HOSTILE);
    // systemd accepts the unit, and the value stayed one argument of echo.
    let unit = fs::read_to_string(slot.join("g.service")).unwrap();
    let pre = unit
        .lines()
        .find(|l| l.starts_with("ExecStartPre="))
        .unwrap();
    assert_eq!(pre.matches(' ').count(), 1, "{pre}");
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(slot.join("g.service"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("g.service:"), "{stderr}\n{unit}");
}

#[test]
fn a_value_that_does_not_fit_its_format_is_refused_naming_it() {
    let s = Socle::new();
    let img = Image::new(
        &s,
        "port",
        &[
            ("manifest.json", r#"{"defaultValues": {"PORT": "8080"}}"#),
            (
                "config.json.template",
                "{\"root\": {\"path\": \"rootfs\", \"readonly\": true},\n \"x-port\": $PORT}\n",
            ),
        ],
    );
    img.pull(&s, "port:1");
    let before = s.snapshot();
    let err = s.fails(&["install", "--set", r#"PORT=1, "evil": true"#, "port:1"]);
    assert!(
        err.contains("value of PORT (--set) cannot go into config.json.template (line 2): outside a JSON string it must be one JSON number"),
        "{err}"
    );
    s.assert_unchanged(&before);
    s.ok(&["install", "--set", "PORT=9090", "port:1"]);
    assert_eq!(
        read_json(&s.slot("port", 0).join("config.json"))["x-port"],
        9090
    );
}

#[test]
fn a_set_of_a_variable_the_image_does_not_have_is_refused_unless_forced() {
    let s = Socle::new();
    Image::greeter(&s).pull(&s, "greeter:1");
    let before = s.snapshot();
    let err = s.fails(&["install", "--name", "g", "--set", "GRETING=hi", "greeter:1"]);
    assert!(
        err.contains("--set GRETING: image greeter:1 has no such variable (its variables are DIR, GREETING, HOST_NAME, STATE_DIRECTORY)"),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    s.assert_unchanged(&before);

    let (_, stderr) = s.ok_with_stderr(&[
        "install",
        "--name",
        "g",
        "--force",
        "--set",
        "GRETING=hi",
        "greeter:1",
    ]);
    assert!(
        stderr.contains("warning: --set GRETING: image greeter:1 has no such variable"),
        "{stderr}"
    );

    let before = s.snapshot();
    let err = s.fails(&["update", "g", "--set", "GREETNG=x"]);
    assert!(
        err.contains("--set GREETNG: image greeter:1 has no such variable"),
        "{err}"
    );
    s.assert_unchanged(&before);
    // Values set before (GRETING, forced then) are not checked again.
    s.ok(&["update", "g", "--set", "GREETING=bonjour"]);
    assert_eq!(
        read_json(&s.slot("g", 1).join("config.json"))["process"]["env"][0],
        "GREETING=bonjour"
    );
}

#[test]
fn pull_checks_the_name_before_importing_anything() {
    let s = Socle::new();
    let img = Image::greeter(&s);
    img.pull(&s, "greeter:1");
    let other = Image::new(&s, "other", &[("manifest.json", MANIFEST)]);
    let before = s.snapshot();
    for bad in [".hidden:1", "-x", "UPPER:1", "a..b", "x:-tag"] {
        let err = s.fails(&[
            "pull",
            &format!("--name={bad}"),
            &oci_archive(&other.archive),
        ]);
        assert!(err.contains(&format!("image name \"{bad}")), "{err}");
        assert!(err.contains("a new image name is"), "{err}");
        s.assert_unchanged(&before);
    }
    // A name the source gives is checked too, before its layers.
    let upper = Image::new(&s, "UPPER", &[("manifest.json", MANIFEST)]);
    let before = s.snapshot();
    let err = s.fails(&["pull", &oci_archive(&upper.archive)]);
    assert!(
        err.contains("image name \"UPPER:1\": a new image name is"),
        "{err}"
    );
    s.assert_unchanged(&before);
    drop(img);
}

/// An image asking for one of each dangerous thing.
fn dangerous(s: &Socle) -> Image {
    Image::new(
        s,
        "danger",
        &[
            ("manifest.json", MANIFEST),
            (
                "config.json.template",
                &config(
                    r#"{"destination": "/host", "type": "bind", "source": "/", "options": ["rbind", "rw"]}"#,
                    r#"{"allow": true, "access": "rwm"}"#,
                ),
            ),
            (
                "service.template",
                &UNIT.replace(
                    "ExecStop=$EXEC_STOP",
                    "ExecStop=$EXEC_STOP\nExecStopPost=/bin/sh -c \"rm -rf /\"",
                ),
            ),
            (
                "tmpfiles.template",
                "d ${STATE_DIRECTORY}/$NAME 0755 - - -\nL+ /etc/socle-values-test-link - - - - /x\n",
            ),
            ("hostfs/etc/cron.d/socle-values-test", "* * * * * root true\n"),
            ("hostfs/root/.ssh/authorized_keys", "ssh-ed25519 AAAA test\n"),
        ],
    )
}

const DANGERS: &[&str] = &[
    "config.json: dangerous: read-write bind of host / into /host",
    "config.json: dangerous: linux.resources.devices allows every device",
    "unit: dangerous: ExecStopPost=/bin/sh -c \"rm -rf /\" recursively removes",
    "tmpfiles: dangerous: \"L+ /etc/socle-values-test-link - - - - /x\" replaces",
    "hostfs: dangerous: installs /etc/cron.d/socle-values-test on the host",
    "hostfs: dangerous: installs /root/.ssh/authorized_keys on the host",
];

#[test]
fn dangerous_images_are_named_by_lint_and_install_and_refused_on_demand() {
    let s = Socle::new();
    let img = dangerous(&s);
    let lint = s.run(&["image", "lint", &path_str(img.def.path())]);
    let lint_out = String::from_utf8_lossy(&lint.stdout);
    for d in DANGERS {
        assert!(
            lint_out.contains(&format!("warning: {d}")),
            "{d}\n{lint_out}"
        );
    }
    img.pull(&s, "danger:1");

    let before = s.snapshot();
    let refused = s.fails(&["install", "--deny-dangerous", "danger:1"]);
    assert!(
        refused.contains("danger:1 is refused by --deny-dangerous"),
        "{refused}"
    );
    for d in DANGERS {
        assert!(
            refused.contains(&d.replacen(": dangerous", "", 1)),
            "{d}\n{refused}"
        );
    }
    s.assert_unchanged(&before);
    let by_env = s
        .command()
        .env("SOCLE_DENY_DANGEROUS", "true")
        .args(["install", "danger:1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&by_env.stderr);
    assert_eq!(by_env.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("danger:1 is refused by --deny-dangerous"),
        "{stderr}"
    );
    s.assert_unchanged(&before);

    let (_, stderr) = s.ok_with_stderr(&["install", "danger:1"]);
    for d in DANGERS {
        assert!(
            stderr.contains(&format!(
                "warning: dangerous: {}",
                d.replacen(": dangerous", "", 1)
            )),
            "{d}\n{stderr}"
        );
    }
}
