//! File names inside a dataset directory: shards and their sidecars carry
//! the generation that wrote them; files being written carry a prefix.

/// Prefix of files being written, renamed into place once complete.
pub(crate) const TMP_PREFIX: &str = ".tmp.";

/// File name of shard `number` of `generation` with extension `ext`.
pub(crate) fn shard_name(number: usize, generation: u64, ext: &str) -> String {
    format!("part-{number:05}.g{generation}.{ext}")
}

/// Generation encoded in a shard or sidecar file name, if it is one of ours.
pub(crate) fn generation_of(name: &str) -> Option<u64> {
    let name = name.strip_prefix(TMP_PREFIX).unwrap_or(name);
    let rest = name.strip_prefix("part-")?;
    let (_, rest) = rest.split_once(".g")?;
    let (g, ext) = rest.split_once('.')?;
    if !matches!(ext, "bin" | "idx" | "src" | "bin.zst") {
        return None;
    }
    g.parse().ok()
}

/// File name of the sidecar of the shard whose token file is `bin`.
pub fn sidecar_name(bin: &str) -> String {
    let stem = bin.strip_suffix(".bin").unwrap_or(bin);
    format!("{stem}.src")
}
