//! Which container, pod and namespace a cgroup belongs to, without asking any API: container
//! ids from the cgroup path layouts of docker, containerd, CRI-O and podman (cgroup v1 and v2,
//! cgroupfs and systemd drivers), names from what the runtimes and the kubelet keep on disk.
//!
//! Cgroup paths, as the runtimes write them (`<id>` is 64 hex digits):
//!
//! | runtime    | cgroupfs driver                         | systemd driver                                        |
//! |------------|-----------------------------------------|-------------------------------------------------------|
//! | docker     | `/docker/<id>`                          | `/system.slice/docker-<id>.scope`                     |
//! | podman     | `/libpod_parent/libpod-<id>`            | `/machine.slice/libpod-<id>.scope` (rootless: under `user@UID.service`) |
//! | containerd | `/kubepods/<qos>/pod<uid>/<id>`         | `/kubepods.slice/.../kubepods-<qos>-pod<uid_>.slice/cri-containerd-<id>.scope` |
//! | CRI-O      | `/kubepods/<qos>/pod<uid>/crio-<id>`    | `/kubepods.slice/.../crio-<id>.scope`                 |
//!
//! (`<qos>` is absent for Guaranteed pods; the systemd driver spells the pod uid with `_`.)
//! Names: the kubelet links every container's log as
//! `/var/log/containers/<pod>_<namespace>_<container>-<id>.log` and keeps
//! `/var/log/pods/<namespace>_<pod>_<uid>/`; docker keeps `"Name"` in
//! `/var/lib/docker/containers/<id>/config.v2.json`; podman keeps `names` in
//! `/var/lib/containers/storage/overlay-containers/containers.json`.

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
    rc::Rc,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::Serialize;

/// The container a cgroup belongs to, as far as the machine tells.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Workload {
    pub runtime: &'static str,
    pub container_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub container: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pod: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

impl Workload {
    /// How a table shows it: its name where known, and a short id.
    pub fn shown(&self) -> String {
        let id = &self.container_id[..12.min(self.container_id.len())];
        match (self.pod.is_empty(), self.container.is_empty()) {
            (false, _) => format!("{}/{}/{} ({id})", self.namespace, self.pod, self.container),
            (true, false) => format!("{} ({id})", self.container),
            (true, true) => id.to_owned(),
        }
    }
}

/// What a cgroup path alone says.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    pub runtime: &'static str,
    pub container_id: &'a str,
    /// The Kubernetes pod uid, with dashes.
    pub pod_uid: Option<String>,
}

/// Container id, runtime and pod uid in a cgroup path; `None` outside containers.
pub fn parse(path: &str) -> Option<Parsed<'_>> {
    let parts: Vec<&str> = path.split('/').filter(|part| !part.is_empty()).collect();
    // The innermost part naming a container: a runtime may nest cgroups below it.
    let (index, runtime, container_id) =
        parts.iter().enumerate().rev().find_map(|(index, part)| {
            let (runtime, id) = container_part(part, parts.get(index.wrapping_sub(1)))?;
            Some((index, runtime, id))
        })?;
    let pod_uid = parts[..index].iter().rev().find_map(|part| pod_uid(part));
    let runtime = match (runtime, &pod_uid) {
        // A bare id in a pod's cgroup: containerd's (or docker's, through cri-dockerd).
        ("", Some(_)) => "containerd",
        ("", None) => return None,
        (runtime, _) => runtime,
    };
    Some(Parsed {
        runtime,
        container_id,
        pod_uid,
    })
}

/// `(runtime, id)` of one path component naming a container; runtime "" for a bare id.
fn container_part<'a>(part: &'a str, parent: Option<&&str>) -> Option<(&'static str, &'a str)> {
    let name = part.strip_suffix(".scope").unwrap_or(part);
    const PREFIXES: [(&str, &str); 6] = [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("crio-conmon-", "cri-o"),
        ("crio-", "cri-o"),
        ("libpod-conmon-", "podman"),
        ("libpod-", "podman"),
    ];
    let (runtime, id) = PREFIXES
        .iter()
        .find_map(|(prefix, runtime)| Some((*runtime, name.strip_prefix(prefix)?)))
        .unwrap_or(match parent {
            Some(&"docker") => ("docker", name),
            _ => ("", name),
        });
    is_container_id(id).then_some((runtime, id))
}

fn is_container_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid_>.slice` (systemd).
fn pod_uid(part: &str) -> Option<String> {
    let name = part.strip_suffix(".slice").unwrap_or(part);
    let (_, uid) = name.rsplit_once("pod")?;
    let uid = uid.replace('_', "-");
    (uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')).then_some(uid)
}

/// Workloads of cgroup paths, cached: names are looked up on disk once per container and again
/// after a while (containers come and go, and names appear after the cgroup does).
pub struct Workloads {
    /// Where the host's files are: `/`, or where a container mounted them.
    root: PathBuf,
    cache: HashMap<String, (Instant, Option<Rc<Workload>>)>,
}

/// Metadata files refused for their size, said once each by the process (serve's tools each
/// have their workloads).
static REFUSED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Docker writes a few KiB per container, podman about one per container it knows: files far
/// larger are not theirs to be read whole (any container's owner can shape them).
const DOCKER_CONFIG_MAX: u64 = 1 << 20;
const PODMAN_CONTAINERS_MAX: u64 = 64 << 20;

/// How long a lookup is kept.
const KEEP: Duration = Duration::from_secs(30);

/// Where the host's files are when tracer runs in a container that mounts them elsewhere.
pub const HOST_ROOT_VARIABLE: &str = "TRACER_HOST_ROOT";

impl Default for Workloads {
    /// Looks for the runtimes' files under `$TRACER_HOST_ROOT`, else `/`.
    fn default() -> Self {
        Self::with_root(std::env::var_os(HOST_ROOT_VARIABLE).unwrap_or_else(|| "/".into()))
    }
}

impl Workloads {
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            cache: HashMap::new(),
        }
    }

    /// The workload of the cgroup at `path` (relative to its hierarchy), if it is a container.
    pub fn of(&mut self, path: &str) -> Option<Rc<Workload>> {
        if let Some((at, workload)) = self.cache.get(path)
            && at.elapsed() < KEEP
        {
            return workload.clone();
        }
        let workload = parse(path).map(|parsed| Rc::new(self.describe(&parsed)));
        if self.cache.len() > 4096 {
            self.cache.retain(|_, (at, _)| at.elapsed() < KEEP);
        }
        self.cache
            .insert(path.to_owned(), (Instant::now(), workload.clone()));
        workload
    }

    fn describe(&self, parsed: &Parsed) -> Workload {
        let mut workload = Workload {
            runtime: parsed.runtime,
            container_id: parsed.container_id.to_owned(),
            ..Workload::default()
        };
        if parsed.pod_uid.is_some() {
            if let Some((pod, namespace, container)) = self.kubelet_log(parsed.container_id) {
                (workload.pod, workload.namespace, workload.container) =
                    (pod, namespace, container);
            } else if let Some((namespace, pod)) = self.pod_dir(parsed.pod_uid.as_deref()) {
                (workload.pod, workload.namespace) = (pod, namespace);
            }
        }
        if workload.container.is_empty() {
            workload.container = match parsed.runtime {
                "docker" => self.docker_name(parsed.container_id),
                "podman" => self.podman_name(parsed.container_id),
                _ => None,
            }
            .unwrap_or_default();
        }
        workload
    }

    fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// `(pod, namespace, container)` from `/var/log/containers/<pod>_<ns>_<container>-<id>.log`.
    fn kubelet_log(&self, id: &str) -> Option<(String, String, String)> {
        let suffix = format!("-{id}.log");
        std::fs::read_dir(self.path("/var/log/containers"))
            .ok()?
            .flatten()
            .find_map(|entry| kubelet_log_name(&entry.file_name().into_string().ok()?, &suffix))
    }

    /// `(namespace, pod)` from `/var/log/pods/<namespace>_<pod>_<uid>/`.
    fn pod_dir(&self, uid: Option<&str>) -> Option<(String, String)> {
        let suffix = format!("_{}", uid?);
        std::fs::read_dir(self.path("/var/log/pods"))
            .ok()?
            .flatten()
            .find_map(|entry| pod_dir_name(&entry.file_name().into_string().ok()?, &suffix))
    }

    fn docker_name(&self, id: &str) -> Option<String> {
        let config = self.path(&format!("/var/lib/docker/containers/{id}/config.v2.json"));
        docker_name_in(&read_metadata(config, DOCKER_CONFIG_MAX)?)
    }

    fn podman_name(&self, id: &str) -> Option<String> {
        let path = self.path("/var/lib/containers/storage/overlay-containers/containers.json");
        podman_name_in(&read_metadata(path, PODMAN_CONTAINERS_MAX)?, id)
    }
}

/// A runtime's metadata file, unless it is larger than `max` bytes: then it is refused,
/// in one line the first time.
fn read_metadata(path: PathBuf, max: u64) -> Option<Vec<u8>> {
    let file = std::fs::File::open(&path).ok()?;
    let size = file.metadata().ok()?.len();
    if size > max {
        if REFUSED
            .lock()
            .is_ok_and(|mut refused| refused.insert(path.clone()))
        {
            eprintln!(
                "tracer: {} is {size} bytes, more than container metadata holds: not read, \
                 and its containers are not named",
                crate::output::printable(&path.to_string_lossy())
            );
        }
        return None;
    }
    let mut bytes = Vec::with_capacity(size as usize);
    std::io::Read::read_to_end(&mut std::io::Read::take(file, max), &mut bytes).ok()?;
    Some(bytes)
}

// What a container's name is read from: files and names any container's owner shapes.

/// `(pod, namespace, container)` from a kubelet log link's name, `<pod>_<ns>_<container>`
/// followed by `suffix`.
pub(crate) fn kubelet_log_name(name: &str, suffix: &str) -> Option<(String, String, String)> {
    let mut fields = name.strip_suffix(suffix)?.splitn(3, '_');
    let (pod, namespace, container) = (fields.next()?, fields.next()?, fields.next()?);
    Some((pod.into(), namespace.into(), container.into()))
}

/// `(namespace, pod)` from a pod's log directory name, `<ns>_<pod>` followed by `suffix`.
pub(crate) fn pod_dir_name(name: &str, suffix: &str) -> Option<(String, String)> {
    let (namespace, pod) = name.strip_suffix(suffix)?.split_once('_')?;
    Some((namespace.into(), pod.into()))
}

/// The container's name in docker's `config.v2.json`.
pub(crate) fn docker_name_in(config: &[u8]) -> Option<String> {
    let config: serde_json::Value = serde_json::from_slice(config).ok()?;
    Some(config["Name"].as_str()?.trim_start_matches('/').to_owned())
}

/// The name of container `id` in podman's `containers.json`.
pub(crate) fn podman_name_in(containers: &[u8], id: &str) -> Option<String> {
    let containers: serde_json::Value = serde_json::from_slice(containers).ok()?;
    containers
        .as_array()?
        .iter()
        .find(|container| container["id"] == id)
        .and_then(|container| container["names"][0].as_str())
        .map(str::to_owned)
}

/// A cgroup directory that still exists, at `path` relative to the hierarchy's `mount`.
pub fn cgroup_exists(mount: &Path, path: &str) -> bool {
    mount.join(path.trim_start_matches('/')).is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1a8b3c9d2e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a";
    const UID: &str = "0d3a5e9c-7b1f-4c2a-9e8d-1f2a3b4c5d6e";

    fn parsed(path: &str) -> Option<(&'static str, String, Option<String>)> {
        parse(path).map(|p| (p.runtime, p.container_id.to_owned(), p.pod_uid))
    }

    #[test]
    fn reads_every_runtime_and_driver_layout() {
        let uid_ = UID.replace('-', "_");
        let pod = Some(UID.to_owned());
        for (path, runtime, pod) in [
            // docker, cgroupfs (v1 and v2) and systemd.
            (format!("/docker/{ID}"), "docker", None),
            (format!("/system.slice/docker-{ID}.scope"), "docker", None),
            // podman: cgroupfs, systemd, rootless, and conmon's own cgroup.
            (format!("/libpod_parent/libpod-{ID}"), "podman", None),
            (format!("/machine.slice/libpod-{ID}.scope"), "podman", None),
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
                ),
                "podman",
                None,
            ),
            (
                format!("/machine.slice/libpod-conmon-{ID}.scope"),
                "podman",
                None,
            ),
            // containerd under the kubelet: cgroupfs, and systemd with the uid's underscores.
            (
                format!("/kubepods/burstable/pod{UID}/{ID}"),
                "containerd",
                pod.clone(),
            ),
            (
                format!("/kubepods/pod{UID}/{ID}"),
                "containerd",
                pod.clone(),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{ID}.scope"
                ),
                "containerd",
                pod.clone(),
            ),
            // CRI-O: cgroupfs and systemd.
            (
                format!("/kubepods/besteffort/pod{UID}/crio-{ID}"),
                "cri-o",
                pod.clone(),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-{ID}.scope"),
                "cri-o",
                pod.clone(),
            ),
        ] {
            assert_eq!(parsed(&path), Some((runtime, ID.to_owned(), pod)), "{path}");
        }
    }

    #[test]
    fn leaves_other_cgroups_alone() {
        for path in [
            "/",
            "/system.slice/postgresql.service",
            "/user.slice/user-0.slice/session-1.scope",
            "/kubepods/burstable",
            &format!("/kubepods/burstable/pod{UID}"),
            // Not 64 hex digits.
            "/docker/4f1a8b3c",
        ] {
            assert_eq!(parsed(path), None, "{path}");
        }
    }

    #[test]
    fn names_containers_from_files_on_disk() {
        let root = std::env::temp_dir().join(format!("tracer-workload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let write = |path: &str, text: &str| {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write(
            &format!("var/log/containers/db-0_prod_postgres-{ID}.log"),
            "",
        );
        let other = ID.replace('4', "5");
        write(&format!("var/log/pods/staging_web-1_{UID}/nginx/0.log"), "");
        write(
            &format!("var/lib/docker/containers/{other}/config.v2.json"),
            r#"{"ID":"x","Name":"/pg-sidecar"}"#,
        );
        write(
            "var/lib/containers/storage/overlay-containers/containers.json",
            &format!(r#"[{{"id":"{ID}","names":["mariadb"]}}]"#),
        );
        let mut workloads = Workloads::with_root(&root);
        let pg = workloads
            .of(&format!("/kubepods/burstable/pod{UID}/{ID}"))
            .unwrap();
        assert_eq!(
            (pg.runtime, &*pg.pod, &*pg.namespace, &*pg.container),
            ("containerd", "db-0", "prod", "postgres")
        );
        // No log link for this one: the pod's directory still names pod and namespace.
        let web = workloads
            .of(&format!("/kubepods/burstable/pod{UID}/crio-{other}"))
            .unwrap();
        assert_eq!((&*web.pod, &*web.namespace), ("web-1", "staging"));
        let docker = workloads.of(&format!("/docker/{other}")).unwrap();
        assert_eq!(
            (docker.runtime, &*docker.container),
            ("docker", "pg-sidecar")
        );
        let podman = workloads
            .of(&format!("/machine.slice/libpod-{ID}.scope"))
            .unwrap();
        assert_eq!(&*podman.container, "mariadb");
        assert!(workloads.of("/system.slice/cron.service").is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A container's owner can make its metadata file any size: one of 100 MB is not read.
    #[test]
    fn refuses_metadata_too_large_to_be_a_runtimes() {
        let root = std::env::temp_dir().join(format!("tracer-huge-{}", std::process::id()));
        let config = root.join(format!("var/lib/docker/containers/{ID}/config.v2.json"));
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        let file = std::fs::File::create(&config).unwrap();
        // Sparse: no disk spent, yet 100 MB to read.
        file.set_len(100 << 20).unwrap();
        let mut workloads = Workloads::with_root(&root);
        let docker = workloads.of(&format!("/docker/{ID}")).unwrap();
        assert_eq!((docker.runtime, &*docker.container_id), ("docker", ID));
        assert_eq!(&*docker.container, "");
        assert!(REFUSED.lock().unwrap().contains(&config));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
