//! Database roots made by debootstrap from Debian's archive (which checks the packages against
//! its signed indexes), kept under target/rootfs and remade when their package list changes:
//! - the guests' root: Debian 12 with PostgreSQL and MariaDB, as an ext4 image the guest mounts
//!   and chroots into for the database suites;
//! - Oracle MySQL, which Debian has only in sid: a tree the host's tests run `mysqld` and its
//!   client in, chrooted (sid's binaries need sid's libraries).

use std::path::PathBuf;

use anyhow::Result;

use crate::shell;

/// A root: a suite of Debian and what is installed in it.
pub struct Root {
    name: &'static str,
    suite: &'static str,
    packages: &'static [&'static str],
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
};

/// Oracle MySQL's server and client (9.x in sid), for the mysql suite.
pub const MYSQL: Root = Root {
    name: "mysql",
    suite: "sid",
    packages: &["mysql-server-core", "mysql-client-core"],
};

const MIRROR: &str = "http://deb.debian.org/debian";
/// Room for the databases' own files is on the guest's scratch disk; this is for the system.
const IMAGE_SIZE: &str = "2G";

impl Root {
    fn dir() -> PathBuf {
        shell::workspace_root().join("target/rootfs")
    }

    /// The tree, made if missing or made from another package list.
    pub fn tree(&self) -> Result<PathBuf> {
        let tree = Self::dir().join(self.name);
        let stamp = Self::dir().join(format!("{}.packages", self.name));
        let wanted = self.packages.join(",");
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
                .args(["--variant=minbase", &format!("--include={wanted}")])
                .arg(self.suite)
                .arg(&tree)
                .arg(MIRROR),
        )?;
        std::fs::write(&stamp, wanted)?;
        Ok(tree)
    }

    /// The root as an ext4 image, made if missing or made from another package list; the tree
    /// it was made from goes.
    pub fn image(&self) -> Result<PathBuf> {
        let image = Self::dir().join(format!("{}.img", self.name));
        let stamp = Self::dir().join(format!("{}.img.packages", self.name));
        let wanted = self.packages.join(",");
        if image.exists() && std::fs::read_to_string(&stamp).is_ok_and(|made| made == wanted) {
            return Ok(image);
        }
        let _ = std::fs::remove_file(&stamp);
        let tree = self.tree()?;
        let _ = std::fs::remove_file(&image);
        shell::run(
            shell::cmd("mkfs.ext4")
                .args(["-q", "-F", "-d"])
                .arg(&tree)
                .arg(&image)
                .arg(IMAGE_SIZE),
        )?;
        std::fs::remove_dir_all(&tree)?;
        let _ = std::fs::remove_file(Self::dir().join(format!("{}.packages", self.name)));
        std::fs::write(&stamp, wanted)?;
        Ok(image)
    }
}
