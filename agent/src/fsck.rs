//! `socle fsck`: checks that the store and the deployments are whole and
//! agree with the host, and repairs what it can. The deployments half lives
//! in `deploy::fsck`; this adds the store: every layer ref names a commit
//! that is there, and every object of every image matches its checksum
//! (`Store::verify`, as `socle images verify`).

use crate::deploy::fsck::{check_deployments, Finding};
use crate::deploy::Host;
use crate::store::{Store, StoredImage, VerifyReport};

#[derive(Debug, Default, serde::Serialize)]
pub struct FsckReport {
    pub containers_checked: usize,
    pub layers_checked: usize,
    pub images_checked: usize,
    pub objects_checked: u64,
    pub findings: Vec<Finding>,
    /// What is as the user left it: not a problem.
    pub notes: Vec<String>,
    /// Images with damaged objects, for a repair that pulls them again (the
    /// front does it, with its registry options and progress).
    #[serde(skip)]
    pub damaged: Vec<(StoredImage, VerifyReport)>,
}

impl FsckReport {
    /// Nothing found, or everything found was repaired.
    pub fn clean(&self) -> bool {
        self.findings.iter().all(|f| f.repaired)
    }
}

/// Checks (and with `repair`, repairs) the deployments, then the store.
/// Damaged images are only reported: see [`FsckReport::damaged`]. Call with
/// the state lock held.
pub fn check(host: &Host, store: &Store, repair: bool) -> anyhow::Result<FsckReport> {
    let deployments = check_deployments(host, repair)?;
    let mut report = FsckReport {
        containers_checked: deployments.containers_checked,
        findings: deployments.findings,
        notes: deployments.notes,
        ..Default::default()
    };
    for digest in store.layer_digests()? {
        report.layers_checked += 1;
        if let Err(e) = store.layer(&digest) {
            report.findings.push(Finding {
                kind: "layer",
                subject: digest.clone(),
                problem: format!("its ref names a commit the store cannot read: {e}"),
                fix: "remove the ref; images using the layer are pulled again".into(),
                repaired: repair,
            });
            if repair {
                store.remove_layer_refs(std::slice::from_ref(&digest))?;
            }
        }
    }
    for image in store.images()? {
        report.images_checked += 1;
        let verify = store.verify(&image)?;
        report.objects_checked += verify.objects_checked;
        if verify.damaged.is_empty() {
            continue;
        }
        report.findings.push(Finding {
            kind: "image",
            subject: image.name.to_string(),
            problem: format!(
                "{} objects changed or missing in the store (first: /{} in layer {}: {})",
                verify.damaged.len(),
                verify.damaged[0].path,
                verify.damaged[0].layer,
                verify.damaged[0].problem
            ),
            fix: format!(
                "pull the damaged layers again from {}",
                image
                    .source
                    .as_deref()
                    .unwrap_or("its source (none recorded)")
            ),
            repaired: false,
        });
        report.damaged.push((image, verify));
    }
    Ok(report)
}
