//! The guests' database root: Debian 12 with PostgreSQL and MariaDB from Debian's packages,
//! made by debootstrap from Debian's archive (which checks them against its signed indexes)
//! into an ext4 image the guest mounts and chroots into for the database suites. Kept under
//! target/rootfs; remade when the package list changes.

use std::path::PathBuf;

use anyhow::Result;

use crate::shell;

/// What the pg and mysql suites run inside the guest (the host's test packages, less what
/// only the host's suites need).
const PACKAGES: &[&str] = &[
    "postgresql",
    "mariadb-server",
    "mariadb-client",
    "libdbd-mariadb-perl",
    "openssl",
];
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
/// Room for the databases' own files is on the guest's scratch disk; this is for the system.
const IMAGE_SIZE: &str = "2G";

/// The image, made if missing or made from another package list.
pub fn image() -> Result<PathBuf> {
    let dir = shell::workspace_root().join("target/rootfs");
    let image = dir.join(format!("{SUITE}.img"));
    let stamp = dir.join(format!("{SUITE}.packages"));
    let wanted = PACKAGES.join(",");
    if image.exists() && std::fs::read_to_string(&stamp).is_ok_and(|made| made == wanted) {
        return Ok(image);
    }
    let tree = dir.join(SUITE);
    let _ = std::fs::remove_dir_all(&tree);
    let _ = std::fs::remove_file(&stamp);
    std::fs::create_dir_all(&dir)?;
    eprintln!("rootfs: debootstrap {SUITE} with {wanted} (a few minutes, once)");
    shell::run(
        shell::cmd("debootstrap")
            .args(["--variant=minbase", &format!("--include={wanted}"), SUITE])
            .arg(&tree)
            .arg(MIRROR),
    )?;
    let _ = std::fs::remove_file(&image);
    shell::run(
        shell::cmd("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(&tree)
            .arg(&image)
            .arg(IMAGE_SIZE),
    )?;
    std::fs::remove_dir_all(&tree)?;
    std::fs::write(&stamp, wanted)?;
    Ok(image)
}
