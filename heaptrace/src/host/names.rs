//! Names for containers: the cgroup path gives a container's id and, under
//! Kubernetes, its pod's UID, but not the names people use. Lookups that
//! can find names sit behind [`ContainerNames`]; the plain cgroup-path
//! identity always works without them.
//!
//! [`KubeletLogs`] needs no API access: the kubelet names the log symlinks
//! it keeps in `/var/log/containers` `<pod>_<namespace>_<container>-<id>.log`.

use std::{collections::HashMap, path::PathBuf, time::Instant};

use crate::core::container::ContainerRef;

/// Something that can put names on a container.
pub trait ContainerNames {
    /// Fills `namespace`, `pod` and `container` when it knows them.
    fn name(&mut self, container: &mut ContainerRef);
}

/// No lookup: the cgroup path's identity only.
pub struct PathOnly;

impl ContainerNames for PathOnly {
    fn name(&mut self, _: &mut ContainerRef) {}
}

/// Names from the kubelet's `/var/log/containers` symlinks.
pub struct KubeletLogs {
    dir: PathBuf,
    by_id: HashMap<String, Names>,
    read_at: Option<Instant>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub pod: String,
    pub namespace: String,
    pub container: String,
}

/// Re-read the directory at most this often when an id is not found.
const REREAD_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

impl KubeletLogs {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), by_id: HashMap::new(), read_at: None }
    }

    fn reread(&mut self) {
        self.read_at = Some(Instant::now());
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        self.by_id =
            entries.filter_map(Result::ok).filter_map(|e| parse_log_name(e.file_name().to_str()?)).collect();
    }
}

impl ContainerNames for KubeletLogs {
    fn name(&mut self, c: &mut ContainerRef) {
        if !self.by_id.contains_key(&c.container_id)
            && self.read_at.is_none_or(|t| t.elapsed() > REREAD_AFTER)
        {
            self.reread();
        }
        if let Some(n) = self.by_id.get(&c.container_id) {
            c.pod = Some(n.pod.clone());
            c.namespace = Some(n.namespace.clone());
            c.container = Some(n.container.clone());
        }
    }
}

/// `<pod>_<namespace>_<container>-<64 hex id>.log` → (id, names). Pod
/// and namespace names cannot contain `_`; container names cannot either.
pub fn parse_log_name(file: &str) -> Option<(String, Names)> {
    let stem = file.strip_suffix(".log")?;
    let (rest, id) = stem.rsplit_once('-')?;
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut parts = rest.splitn(3, '_');
    let (pod, namespace, container) = (parts.next()?, parts.next()?, parts.next()?);
    if [pod, namespace, container].iter().any(|s| s.is_empty() || s.contains('_')) {
        return None;
    }
    Some((id.to_owned(), Names { pod: pod.into(), namespace: namespace.into(), container: container.into() }))
}

/// Tries each lookup in turn.
pub struct Chain(pub Vec<Box<dyn ContainerNames>>);

impl ContainerNames for Chain {
    fn name(&mut self, c: &mut ContainerRef) {
        for lookup in &mut self.0 {
            if c.pod.is_some() {
                return;
            }
            lookup.name(c);
        }
    }
}

/// The lookups heaptrace uses by default.
pub fn default_lookup() -> Chain {
    Chain(vec![Box::new(KubeletLogs::new("/var/log/containers")), Box::new(PathOnly)])
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e1d2c9b8a7f6e5d4c3b2a19081726354453627181920a1b2c3d4e5f607182";

    #[test]
    fn kubelet_log_names() {
        let (id, n) = parse_log_name(&format!("api-7d9f8-xk2p_shop_server-{ID}.log")).unwrap();
        assert_eq!(id, ID);
        assert_eq!(
            n,
            Names { pod: "api-7d9f8-xk2p".into(), namespace: "shop".into(), container: "server".into() }
        );
        for bad in [
            format!("api_shop_server-{}.log", &ID[..63]),
            format!("api_shop-{ID}.log"),
            format!("api_shop_server-{ID}.txt"),
            format!("_shop_server-{ID}.log"),
            "garbage".to_owned(),
        ] {
            assert_eq!(parse_log_name(&bad), None, "{bad}");
        }
    }

    #[test]
    fn names_from_a_log_directory() {
        let dir = std::env::temp_dir().join(format!("heaptrace-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("web-1_prod_app-{ID}.log")), "").unwrap();
        let mut lookup = Chain(vec![Box::new(KubeletLogs::new(&dir)), Box::new(PathOnly)]);
        let mut c = crate::core::container::parse_cgroup_path(&format!(
            "/kubepods/burstable/pod0f4a8c2e-1b3d-4e5f-8a9b-0c1d2e3f4a5b/{ID}"
        ))
        .unwrap();
        lookup.name(&mut c);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            (c.pod.as_deref(), c.namespace.as_deref(), c.container.as_deref()),
            (Some("web-1"), Some("prod"), Some("app"))
        );
    }
}
