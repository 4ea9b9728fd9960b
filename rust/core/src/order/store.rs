//! Where orders live: `<dataset>/orders/<name>.order`, so several orders of
//! one dataset coexist (`"iclm"`, `"iclm-minilm"`) and travel with it.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Folder of a dataset holding its orders.
pub const ORDERS_DIR: &str = "orders";
/// Extension of order files.
pub const EXTENSION: &str = "order";

/// The folder holding the dataset at `root`: the directory itself, or the
/// folder of a foreign file (a Megatron prefix, a raw `.bin`).
fn home(root: &Path) -> &Path {
    if root.is_dir() {
        root
    } else {
        root.parent().unwrap_or(root)
    }
}

/// The file of the order `name` of the dataset at `root`.
pub fn order_path(root: &Path, name: &str) -> Result<PathBuf> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        return Err(Error::invalid(
            "name",
            format!("{name:?} is not an order name; use letters, digits, '-', '_' and '.' (e.g. \"iclm\")"),
        ));
    }
    Ok(home(root)
        .join(ORDERS_DIR)
        .join(format!("{name}.{EXTENSION}")))
}

/// Names of the orders stored with the dataset at `root`, sorted.
pub fn list(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(home(root).join(ORDERS_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == EXTENSION).then(|| p.file_stem()?.to_str().map(str::to_string))?
        })
        .collect();
    names.sort();
    names
}

/// Resolves an order given by the user: an existing file path is used as it
/// is; a bare name (no path separator, no `.order` suffix) is an order stored
/// with the dataset at `root`.
pub fn resolve(root: &Path, spec: &Path) -> Result<PathBuf> {
    let text = spec.to_string_lossy();
    let bare = spec.components().count() == 1 && !text.ends_with(&format!(".{EXTENSION}"));
    if !bare || spec.is_file() {
        return Ok(spec.to_path_buf());
    }
    let path = order_path(root, &text)?;
    if !path.is_file() {
        let have = list(root);
        return Err(Error::invalid(
            "order",
            format!(
                "{} has no order named {text:?} ({}); create it with tokenloom.order({:?}, name={text:?}) or `tokenloom order {} --name {text}`",
                root.display(),
                if have.is_empty() { "it has none".to_string() } else { format!("it has: {}", have.join(", ")) },
                root.display().to_string(),
                root.display()
            ),
        ));
    }
    Ok(path)
}

/// Writes `order` as the order `name` of the dataset at `root` (atomically,
/// replacing an older one of that name) and returns its path.
pub fn save(root: &Path, name: &str, order: &crate::order_file::Order) -> Result<PathBuf> {
    let path = order_path(root, name)?;
    let dir = home(root).join(ORDERS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    order.write(&path)?;
    Ok(path)
}
