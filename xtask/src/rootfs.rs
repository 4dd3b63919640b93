//! Database roots made by debootstrap from Debian's archive (which checks the packages against
//! its signed indexes), kept in the user's cache (`~/.cache/tracer/rootfs`: a clean clone, as CI
//! makes, need not make them again) and remade when their package list changes:
//! - the guests' root: Debian 12 with PostgreSQL and MariaDB, as an ext4 image the guest mounts
//!   and chroots into for the database suites;
//! - Oracle MySQL, which Debian has only in sid: a tree the host's tests run `mysqld` and its
//!   clients in, chrooted (sid's binaries need sid's libraries), and its image for guests.

use std::path::PathBuf;

use anyhow::Result;

use crate::shell;

/// A root: a suite of Debian, what is installed in it, and Python packages from PyPI.
pub struct Root {
    name: &'static str,
    suite: &'static str,
    packages: &'static [&'static str],
    python: &'static [&'static str],
}

/// What the pg and mysql suites run inside the guest (the host's test packages, less what
/// only the host's suites need).
pub const GUEST_DATABASES: Root = Root {
    name: "bookworm",
    suite: "bookworm",
    packages: &[
        "postgresql",
        "mariadb-server",
        "mariadb-client",
        "libdbd-mariadb-perl",
        "openssl",
    ],
    python: &[],
};

/// Oracle MySQL's server and client (9.x in sid), for the mysql suite, with Oracle's own
/// Python driver (pure Python), whose prepared statements are what Oracle's client libraries
/// send: the suite runs it chrooted here, as the server, on the host and in guests alike.
pub const MYSQL: Root = Root {
    name: "mysql",
    suite: "sid",
    packages: &["mysql-server-core", "mysql-client-core", "python3"],
    python: &["mysql-connector-python==26.10.0"],
};

/// Where a root's Python packages are (`PYTHONPATH` inside it, as the tests set it).
const PYTHON_PACKAGES: &str = "usr/local/lib/tracer-python";

const MIRROR: &str = "http://deb.debian.org/debian";
/// Room for the system and the servers' data the tests make in it (MySQL's root is ~1 GiB).
const IMAGE_SIZE: &str = "4G";

impl Root {
    fn dir() -> PathBuf {
        let cache = (std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from))
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")));
        match cache {
            Some(cache) => cache.join("tracer/rootfs"),
            None => shell::workspace_root().join("target/rootfs"),
        }
    }

    /// The tree, made if missing or made from another package list.
    pub fn tree(&self) -> Result<PathBuf> {
        let tree = Self::dir().join(self.name);
        let stamp = Self::dir().join(format!("{}.packages", self.name));
        let wanted = self.wanted();
        if tree.is_dir() && std::fs::read_to_string(&stamp).is_ok_and(|made| made == wanted) {
            return Ok(tree);
        }
        let _ = std::fs::remove_dir_all(&tree);
        let _ = std::fs::remove_file(&stamp);
        std::fs::create_dir_all(Self::dir())?;
        eprintln!(
            "rootfs: debootstrap {} with {wanted} (a minute or two, once)",
            self.suite
        );
        shell::run(
            shell::cmd("debootstrap")
                .args(["--variant=minbase"])
                .arg(format!("--include={}", self.packages.join(",")))
                .arg(self.suite)
                .arg(&tree)
                .arg(MIRROR),
        )?;
        if !self.python.is_empty() {
            // With the project's pip, pure Python (the root's own Python is another version).
            crate::setup::python_environment()?;
            let pip = shell::workspace_root().join("target/python/bin/pip");
            shell::run(
                shell::cmd(pip)
                    .args(["install", "--quiet", "--disable-pip-version-check"])
                    .args(["--no-deps", "--target"])
                    .arg(tree.join(PYTHON_PACKAGES))
                    .args(self.python),
            )?;
        }
        std::fs::write(&stamp, wanted)?;
        Ok(tree)
    }

    /// What the root is made of, as its stamp says.
    fn wanted(&self) -> String {
        [self.packages, self.python].concat().join(",")
    }

    /// The root as an ext4 image, made if missing or made from another package list; the tree
    /// stays, for the host's tests.
    pub fn image(&self) -> Result<PathBuf> {
        let image = Self::dir().join(format!("{}.img", self.name));
        let stamp = Self::dir().join(format!("{}.img.packages", self.name));
        let wanted = self.wanted();
        if image.exists() && std::fs::read_to_string(&stamp).is_ok_and(|made| made == wanted) {
            return Ok(image);
        }
        let _ = std::fs::remove_file(&stamp);
        let tree = self.tree()?;
        // Not the folders of servers a failed test left in the host's tree.
        for left in std::fs::read_dir(tree.join("tmp"))?.flatten() {
            let _ = std::fs::remove_dir_all(left.path());
        }
        let _ = std::fs::remove_file(&image);
        shell::run(
            shell::cmd("mkfs.ext4")
                .args(["-q", "-F", "-d"])
                .arg(&tree)
                .arg(&image)
                .arg(IMAGE_SIZE),
        )?;
        std::fs::write(&stamp, wanted)?;
        Ok(image)
    }
}
