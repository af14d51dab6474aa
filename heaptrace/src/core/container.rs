//! Container identity from a cgroup (v2) path. Pure: the path is read at the
//! edge (`/proc/PID/cgroup`); this only recognises the shapes that container
//! runtimes and Kubernetes give their cgroups (docker, containerd, CRI-O and
//! podman, under systemd or cgroupfs drivers; the tests list every shape).

use serde::{Deserialize, Serialize};

/// Which runtime made the cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
    /// A Kubernetes pod's container whose runtime the path does not name
    /// (the cgroupfs driver's `/kubepods/<qos>/pod<uid>/<id>`).
    Unknown,
}

/// A container, as far as its cgroup path tells.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRef {
    pub runtime: Runtime,
    /// The runtime's container id (64 hex digits).
    pub container_id: String,
    /// Kubernetes pod UID, with dashes, when the path is a pod's.
    pub pod_uid: Option<String>,
    /// Kubernetes QoS class: guaranteed, burstable or besteffort.
    pub qos: Option<String>,
    /// Names, when a `crate::host::names` lookup found them (the
    /// cgroup path alone does not carry them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// Recognises a container's cgroup path; `None` for everything else
/// (system services, user sessions, the root, malformed ids).
pub fn parse_cgroup_path(path: &str) -> Option<ContainerRef> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    // The container is the innermost component that carries an id; podman
    // with systemd may nest a "container" leaf below it.
    let (at, (runtime, container_id)) =
        parts.iter().enumerate().rev().find_map(|(i, p)| Some((i, container_component(p)?)))?;
    let (pod_uid, qos) = pod(&parts);
    let runtime = match runtime {
        // Docker's cgroupfs driver: /docker/<id>.
        Runtime::Unknown if at > 0 && parts[at - 1] == "docker" => Runtime::Docker,
        // A bare id anywhere else is only a container inside a pod.
        Runtime::Unknown if pod_uid.is_none() => return None,
        runtime => runtime,
    };
    Some(ContainerRef { runtime, container_id, pod_uid, qos, namespace: None, pod: None, container: None })
}

/// `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `libpod-<id>.scope`, `libpod-<id>`, or a bare `<id>` (cgroupfs drivers).
fn container_component(part: &str) -> Option<(Runtime, String)> {
    let stem = part.strip_suffix(".scope").unwrap_or(part);
    for (prefix, runtime) in [
        ("docker-", Runtime::Docker),
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("libpod-", Runtime::Podman),
    ] {
        if let Some(id) = stem.strip_prefix(prefix) {
            return is_container_id(id).then(|| (runtime, id.to_owned()));
        }
    }
    // A bare id: /docker/<id> (docker's cgroupfs driver) or a cgroupfs pod.
    is_container_id(stem).then(|| (Runtime::Unknown, stem.to_owned()))
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Pod UID and QoS from `kubepods` path components, systemd or cgroupfs
/// style: `kubepods-burstable-pod<uid_with_underscores>.slice` or
/// `kubepods/burstable/pod<uid>`; no QoS level means guaranteed.
fn pod(parts: &[&str]) -> (Option<String>, Option<String>) {
    // The kubelet's tree starts at a "kubepods" component: the first one
    // usually, deeper when the node itself runs in a container or under a
    // kubelet slice (kind: /system.slice/docker-<id>.scope/kubelet.slice/
    // kubelet-kubepods.slice/...).
    let Some(start) = parts.iter().position(|p| p.starts_with("kubepods") || p.contains("-kubepods")) else {
        return (None, None);
    };
    let mut qos = "guaranteed";
    for p in &parts[start..] {
        for level in ["burstable", "besteffort"] {
            if p.contains(level) {
                qos = level;
            }
        }
        let stem = p.strip_suffix(".slice").unwrap_or(p);
        if let Some(at) = stem.rfind("pod") {
            let uid = stem[at + 3..].replace('_', "-");
            if is_uid(&uid) {
                return (Some(uid), Some(qos.to_owned()));
            }
        }
    }
    (None, None)
}

/// 8-4-4-4-12 hex digits.
fn is_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e1d2c9b8a7f6e5d4c3b2a19081726354453627181920a1b2c3d4e5f607182";
    const UID: &str = "0f4a8c2e-1b3d-4e5f-8a9b-0c1d2e3f4a5b";

    fn c(runtime: Runtime, pod_uid: Option<&str>, qos: Option<&str>) -> Option<ContainerRef> {
        Some(ContainerRef {
            runtime,
            container_id: ID.into(),
            pod_uid: pod_uid.map(Into::into),
            qos: qos.map(Into::into),
            namespace: None,
            pod: None,
            container: None,
        })
    }

    #[test]
    fn docker() {
        assert_eq!(
            parse_cgroup_path(&format!("/system.slice/docker-{ID}.scope")),
            c(Runtime::Docker, None, None)
        );
        // cgroupfs driver: a bare id under /docker.
        assert_eq!(parse_cgroup_path(&format!("/docker/{ID}")), c(Runtime::Docker, None, None));
        // A bare id elsewhere, outside any pod, is not taken for a container.
        assert_eq!(parse_cgroup_path(&format!("/system.slice/{ID}")), None);
    }

    #[test]
    fn kubernetes_containerd_systemd_and_cgroupfs() {
        let underscored = UID.replace('-', "_");
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{underscored}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(parse_cgroup_path(&systemd), c(Runtime::Containerd, Some(UID), Some("burstable")));
        let guaranteed = format!("/kubepods.slice/kubepods-pod{underscored}.slice/cri-containerd-{ID}.scope");
        assert_eq!(parse_cgroup_path(&guaranteed), c(Runtime::Containerd, Some(UID), Some("guaranteed")));
        let cgroupfs = format!("/kubepods/besteffort/pod{UID}/{ID}");
        assert_eq!(parse_cgroup_path(&cgroupfs), c(Runtime::Unknown, Some(UID), Some("besteffort")));
    }

    #[test]
    fn cri_o_and_podman() {
        let underscored = UID.replace('-', "_");
        let crio = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{underscored}.slice/crio-{ID}.scope"
        );
        assert_eq!(parse_cgroup_path(&crio), c(Runtime::CriO, Some(UID), Some("besteffort")));
        assert_eq!(parse_cgroup_path(&format!("/libpod_parent/libpod-{ID}")), c(Runtime::Podman, None, None));
        assert_eq!(
            parse_cgroup_path(&format!("/machine.slice/libpod-{ID}.scope")),
            c(Runtime::Podman, None, None)
        );
        assert_eq!(
            parse_cgroup_path(&format!("/machine.slice/libpod-{ID}.scope/container")),
            c(Runtime::Podman, None, None)
        );
    }

    #[test]
    fn kubepods_below_other_cgroups() {
        // kind: the node is a docker container, the kubelet has a slice.
        let kind = format!(
            "/system.slice/docker-{ID}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        assert_eq!(parse_cgroup_path(&kind), c(Runtime::Containerd, Some(UID), Some("besteffort")));
        let nested = format!("/test-root/kubepods/burstable/pod{UID}/{ID}");
        assert_eq!(parse_cgroup_path(&nested), c(Runtime::Unknown, Some(UID), Some("burstable")));
    }

    #[test]
    fn not_containers_and_malformed_paths() {
        for path in [
            "/",
            "",
            "/system.slice/nginx.service",
            "/user.slice/user-1000.slice/session-3.scope",
            "/system.slice/docker-abc123.scope",
            &format!("/system.slice/docker-{}.scope", &ID[..63]),
            &format!("/system.slice/docker-{}.scope", ID.to_uppercase()),
            &format!("/system.slice/docker-{ID}x.scope"),
            &format!("/kubepods/burstable/podnot-a-uid/{}", &ID[..10]),
            "/kubepods.slice/kubepods-burstable.slice",
        ] {
            assert_eq!(parse_cgroup_path(path), None, "{path}");
        }
    }
}
