//! Finding the `master` and `secondary` binaries, building them first (once per process).
//!
//! `cargo test -p some-package` does not build other packages' binaries, and a stale binary
//! would test old code, so the first caller runs `cargo build -p replog-master -p
//! replog-secondary` for the profile it asks for. `REPLOG_BIN_DIR` skips the build and names
//! the directory holding both binaries (for prebuilt binaries, or a checker run outside the
//! workspace).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The environment variable naming a directory with prebuilt binaries.
pub const BIN_DIR_ENV: &str = "REPLOG_BIN_DIR";

/// The cargo profile to build and look in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `target/debug`, cargo's default.
    Debug,
    /// `target/release`, built with `--release`.
    Release,
}

impl Profile {
    /// The profile this crate was compiled with: a checker built with `--release` drives
    /// release nodes, a debug test drives debug nodes.
    pub fn of_this_build() -> Profile {
        if cfg!(debug_assertions) {
            Profile::Debug
        } else {
            Profile::Release
        }
    }

    /// The directory under the target directory.
    pub fn dir_name(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

/// Why the binaries cannot be had. Cloneable, because the outcome of the one build is kept and
/// handed to every later caller.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BinaryError {
    /// `cargo` could not be started.
    #[error("cannot run {cargo}: {reason}")]
    CannotRunCargo {
        /// The cargo that was tried (`$CARGO` or `cargo`).
        cargo: String,
        /// Why.
        reason: String,
    },
    /// The build failed.
    #[error("building the node binaries failed ({status}):\n{stderr}")]
    BuildFailed {
        /// Cargo's exit status.
        status: String,
        /// Cargo's error output.
        stderr: String,
    },
    /// A binary is not where it should be.
    #[error("{0} is missing (set {BIN_DIR_ENV} to a directory holding `master` and `secondary`)")]
    Missing(PathBuf),
}

/// Where the node binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The `master` binary.
    pub master: PathBuf,
    /// The `secondary` binary.
    pub secondary: PathBuf,
}

/// One build per profile per process, however many callers ask at once.
static DEBUG: OnceLock<Result<Binaries, BinaryError>> = OnceLock::new();
static RELEASE: OnceLock<Result<Binaries, BinaryError>> = OnceLock::new();

impl Binaries {
    /// The binaries from `REPLOG_BIN_DIR` if set, otherwise built (once) for `profile` in this
    /// workspace. Blocking: a first build can take minutes.
    pub fn get(profile: Profile) -> Result<Binaries, BinaryError> {
        if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
            return Binaries::in_dir(Path::new(&dir));
        }
        let cell = match profile {
            Profile::Debug => &DEBUG,
            Profile::Release => &RELEASE,
        };
        cell.get_or_init(|| build(profile)).clone()
    }

    /// The binaries in `dir`, without building anything.
    pub fn in_dir(dir: &Path) -> Result<Binaries, BinaryError> {
        let binary = |name: &str| {
            let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
            if path.is_file() {
                Ok(path)
            } else {
                Err(BinaryError::Missing(path))
            }
        };
        Ok(Binaries {
            master: binary("master")?,
            secondary: binary("secondary")?,
        })
    }
}

/// The workspace root: this crate lives in `<root>/testkit`.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the testkit lives inside the workspace")
        .to_path_buf()
}

/// The target directory cargo builds into, honouring `CARGO_TARGET_DIR` (relative to the root,
/// where the build runs).
pub fn target_dir() -> PathBuf {
    let root = workspace_root();
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| root.join(dir))
        .unwrap_or_else(|| root.join("target"))
}

fn build(profile: Profile) -> Result<Binaries, BinaryError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(&cargo);
    command.current_dir(workspace_root()).args([
        "build",
        "-p",
        "replog-master",
        "-p",
        "replog-secondary",
    ]);
    if profile == Profile::Release {
        command.arg("--release");
    }
    let output = command
        .output()
        .map_err(|error| BinaryError::CannotRunCargo {
            cargo: cargo.to_string_lossy().into_owned(),
            reason: error.to_string(),
        })?;
    if !output.status.success() {
        return Err(BinaryError::BuildFailed {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Binaries::in_dir(&target_dir().join(profile.dir_name()))
}
