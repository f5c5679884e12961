//! Refusing outputs that would destroy an input: checked before anything is opened for
//! writing.

use std::path::{Path, PathBuf};

/// What identifies a file whatever the path that names it (links included).
#[cfg(unix)]
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok()
}

/// Fails when an output file (`--failed`, the journal, …) is the same file as an input,
/// or when an input lies in the `--out` folder, where it could be overwritten.
pub fn outputs_spare_inputs(
    inputs: &[String],
    files: &[(&str, &Path)],
    out_dir: Option<&Path>,
) -> Result<(), String> {
    let inputs: Vec<(&str, PathBuf)> = inputs
        .iter()
        .filter(|p| p.as_str() != "-")
        .map(|p| (p.as_str(), PathBuf::from(p)))
        .collect();
    for (flag, output) in files {
        let Some(out_id) = identity(output) else {
            continue; // does not exist yet: it cannot be an input
        };
        for (name, input) in &inputs {
            if identity(input).as_ref() == Some(&out_id) {
                return Err(format!(
                    "{flag} {} is the input {name}: refusing to overwrite it",
                    output.display()
                ));
            }
        }
    }
    if let Some(dir) = out_dir
        && let Ok(dir) = std::fs::canonicalize(dir)
    {
        for (name, input) in &inputs {
            let parent = std::fs::canonicalize(input)
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf));
            if parent.as_deref() == Some(dir.as_path()) {
                return Err(format!(
                    "--out {} holds the input {name}, which batch files could overwrite: choose another folder",
                    dir.display()
                ));
            }
        }
    }
    Ok(())
}
