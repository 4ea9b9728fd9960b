//! `manifest.json`: what a dataset holds and the checksums of its files.
//! It is written last, atomically, so its presence commits a dataset.

use std::path::Path;

use crate::hash::{hex, xxh3_64};
use serde::{Deserialize, Serialize};

use super::compression::Compression;
use super::dtype::DType;
use crate::error::{Error, Result};
use crate::io::read_regular;

/// Value of the `format` field.
pub const FORMAT: &str = "tokenloom.dataset";
/// Manifest version this build writes and reads.
pub const VERSION: u64 = 1;
/// File name of the manifest inside a dataset directory.
pub const FILE_NAME: &str = "manifest.json";
/// The largest manifest read: 256 MiB, a million shards or so.
pub const MAX_BYTES: u64 = 256 << 20;

/// One shard: a `.bin` and its `.idx`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// File name of the token file, relative to the dataset directory.
    pub bin: String,
    /// File name of the index file.
    pub idx: String,
    /// Documents in the shard.
    pub num_docs: u64,
    /// Tokens in the shard.
    pub num_tokens: u64,
    /// xxh3-64 of the `.bin`, 16 lower-case hex digits.
    pub bin_xxh3: String,
    /// xxh3-64 of the whole `.idx` file, 16 lower-case hex digits.
    pub idx_xxh3: String,
    /// Size in bytes of the blocks `block_xxh3` covers; absent in manifests
    /// written before block checksums (and for foreign files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_bytes: Option<u64>,
    /// xxh3-64 of each `block_bytes` block of the token bytes (the last one
    /// may be short), 16 hex digits each, concatenated
    /// ([`super::blocks::encode`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub block_xxh3: String,
}

/// The dataset's description.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Format version, [`VERSION`].
    pub version: u64,
    /// Counter bumped by every rewrite of the dataset; shard file names carry it.
    pub generation: u64,
    /// Token dtype of every shard.
    pub dtype: DType,
    /// End-of-document token id, when known.
    pub eos_id: Option<u64>,
    /// Vocabulary size, when known; every token is below it.
    pub vocab_size: Option<u64>,
    /// Fingerprint of the tokenizer that produced the tokens, when known.
    pub tokenizer: Option<String>,
    /// Documents in the dataset.
    pub num_docs: u64,
    /// Tokens in the dataset.
    pub num_tokens: u64,
    /// The shards, in document order.
    pub shards: Vec<ShardEntry>,
    /// How shard bodies are stored (`None`: plain `.bin` files). A
    /// compressed body is stored as `<bin><suffix>`; `bin_xxh3` and sizes
    /// describe the decompressed tokens. Absent from uncompressed manifests,
    /// so that their bytes and checksums are those of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
}

#[derive(Serialize, Deserialize)]
struct ManifestFile {
    #[serde(flatten)]
    manifest: Manifest,
    checksum: String,
}

const RESTORE: &str = "the manifest is damaged; restore the dataset from a good copy or rebuild it";

fn json_offset(text: &[u8], line: usize, column: usize) -> u64 {
    let mut seen = 1;
    for (i, b) in text.iter().enumerate() {
        if seen == line {
            return (i + column.saturating_sub(1)) as u64;
        }
        if *b == b'\n' {
            seen += 1;
        }
    }
    text.len() as u64
}

fn key_offset(text: &[u8], key: &str) -> u64 {
    let needle = format!("\"{key}\"");
    text.windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .map_or(0, |p| p as u64)
}

impl Manifest {
    /// A manifest of an empty dataset.
    pub fn new(dtype: DType) -> Self {
        Manifest {
            format: FORMAT.to_string(),
            version: VERSION,
            generation: 0,
            dtype,
            eos_id: None,
            vocab_size: None,
            tokenizer: None,
            num_docs: 0,
            num_tokens: 0,
            shards: Vec::new(),
            compression: None,
        }
    }

    fn checksum(&self) -> Result<String> {
        let body = serde_json::to_vec(self)
            .map_err(|e| Error::invalid("manifest", format!("cannot serialise: {e}")))?;
        Ok(hex(xxh3_64(&body)))
    }

    /// The manifest as the bytes of `manifest.json`.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let file = ManifestFile {
            manifest: self.clone(),
            checksum: self.checksum()?,
        };
        let mut out = serde_json::to_vec_pretty(&file)
            .map_err(|e| Error::invalid("manifest", format!("cannot serialise: {e}")))?;
        out.push(b'\n');
        Ok(out)
    }

    /// Parses and checks manifest bytes; `path` names the file in errors.
    pub fn from_bytes(text: &[u8], path: &Path) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_slice(text).map_err(|e| {
            Error::corrupt(
                path,
                json_offset(text, e.line(), e.column()),
                format!("not valid JSON ({e})"),
                RESTORE,
            )
        })?;
        if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(Error::corrupt(
                path,
                key_offset(text, "format"),
                format!("\"format\" is not \"{FORMAT}\"; this is not a tokenloom manifest"),
                "point at a tokenloom dataset directory, or use `tokenloom index` / the compat readers for other formats",
            ));
        }
        match value.get("version").and_then(|v| v.as_u64()) {
            Some(VERSION) => {}
            Some(found) => {
                return Err(Error::version(
                    path,
                    key_offset(text, "version"),
                    found,
                    VERSION,
                ))
            }
            None => {
                return Err(Error::corrupt(
                    path,
                    key_offset(text, "version"),
                    "\"version\" is missing or not an integer",
                    RESTORE,
                ))
            }
        }
        let stored = match value.get("checksum") {
            Some(serde_json::Value::String(c)) => c.clone(),
            _ => {
                return Err(Error::corrupt(
                    path,
                    key_offset(text, "checksum"),
                    "\"checksum\" is missing or not a string",
                    RESTORE,
                ))
            }
        };
        // Parsed again from the text (not the value) so that a wrong field
        // is reported at its line and column.
        let manifest: Manifest = serde_json::from_slice(text).map_err(|e| {
            Error::corrupt(
                path,
                json_offset(text, e.line(), e.column()),
                format!("manifest fields are wrong ({e})"),
                RESTORE,
            )
        })?;
        let file = ManifestFile {
            manifest,
            checksum: stored,
        };
        let expected = file.manifest.checksum()?;
        if expected != file.checksum {
            return Err(Error::corrupt(
                path,
                key_offset(text, "checksum"),
                format!(
                    "manifest checksum mismatch (stored {}, computed {expected}); it was edited or damaged",
                    file.checksum
                ),
                RESTORE,
            ));
        }
        file.manifest.check_consistent(path, text)?;
        Ok(file.manifest)
    }

    fn check_consistent(&self, path: &Path, text: &[u8]) -> Result<()> {
        let docs: u64 = self
            .shards
            .iter()
            .try_fold(0u64, |a, s| a.checked_add(s.num_docs))
            .unwrap_or(u64::MAX);
        let tokens: u64 = self
            .shards
            .iter()
            .try_fold(0u64, |a, s| a.checked_add(s.num_tokens))
            .unwrap_or(u64::MAX);
        if docs != self.num_docs || tokens != self.num_tokens {
            return Err(Error::corrupt(
                path,
                key_offset(text, "num_docs"),
                format!(
                    "totals ({} documents, {} tokens) disagree with the shards ({docs}, {tokens})",
                    self.num_docs, self.num_tokens
                ),
                RESTORE,
            ));
        }
        for s in &self.shards {
            for name in [&s.bin, &s.idx] {
                let plain = !name.is_empty()
                    && !name.contains(['/', '\\'])
                    && name != "."
                    && name != ".."
                    && name != FILE_NAME;
                if !plain {
                    return Err(Error::corrupt(
                        path,
                        key_offset(text, name),
                        format!(
                            "shard file name {name:?} is not a plain file name inside the dataset"
                        ),
                        RESTORE,
                    ));
                }
            }
        }
        if let (Some(eos), Some(vocab)) = (self.eos_id, self.vocab_size) {
            if eos >= vocab {
                return Err(Error::corrupt(
                    path,
                    key_offset(text, "eos_id"),
                    format!("eos_id {eos} is not below vocab_size {vocab}"),
                    RESTORE,
                ));
            }
        }
        Ok(())
    }

    /// Reads `manifest.json` from a dataset directory.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE_NAME);
        let text = read_regular(&path, MAX_BYTES)?;
        Self::from_bytes(&text, &path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::any;

    fn sample() -> Manifest {
        let mut m = Manifest::new(DType::U16);
        m.eos_id = Some(0);
        m.vocab_size = Some(257);
        m.num_docs = 2;
        m.num_tokens = 5;
        m.shards.push(ShardEntry {
            bin: "part-00000.g1.bin".into(),
            idx: "part-00000.g1.idx".into(),
            num_docs: 2,
            num_tokens: 5,
            bin_xxh3: hex(1),
            idx_xxh3: hex(2),
            ..ShardEntry::default()
        });
        m
    }

    #[test]
    fn round_trip() {
        let m = sample();
        let p = Path::new("manifest.json");
        assert_eq!(Manifest::from_bytes(&m.to_bytes().unwrap(), p).unwrap(), m);
    }

    #[test]
    fn edits_are_caught() {
        let p = Path::new("manifest.json");
        let text = String::from_utf8(sample().to_bytes().unwrap()).unwrap();
        let edited = text.replace("\"num_tokens\": 5", "\"num_tokens\": 6");
        assert!(matches!(
            Manifest::from_bytes(edited.as_bytes(), p),
            Err(Error::Corrupt { .. })
        ));
        let newer = text.replace("\"version\": 1", "\"version\": 9");
        assert!(matches!(
            Manifest::from_bytes(newer.as_bytes(), p),
            Err(Error::UnsupportedVersion { found: 9, .. })
        ));
        let err = Manifest::from_bytes(b"{\n  \"format\": oops", p).unwrap_err();
        assert!(
            matches!(err, Error::Corrupt { offset, .. } if offset > 0),
            "{err}"
        );
    }

    #[test]
    fn wrong_fields_and_checksums_are_reported_where_they_are() {
        let p = Path::new("manifest.json");
        let text = String::from_utf8(sample().to_bytes().unwrap()).unwrap();
        let at = |needle: &str| text.find(needle).unwrap() as u64;
        // A number where a string belongs: reported at that value, not at byte 0.
        let typed = text.replace("\"bin\": \"part-00000.g1.bin\"", "\"bin\": 7");
        let err = Manifest::from_bytes(typed.as_bytes(), p).unwrap_err();
        let Error::Corrupt { offset, .. } = err else {
            panic!("{err}")
        };
        let bin = at("\"bin\"");
        assert!((bin..bin + 12).contains(&offset), "{offset} vs {bin}");
        // A checksum that is not a string, and a wrong checksum.
        let sum = at("\"checksum\"");
        let typed = text.replacen("\"checksum\": \"", "\"checksum\": 5, \"x\": \"", 1);
        let err = Manifest::from_bytes(typed.as_bytes(), p).unwrap_err();
        assert!(
            matches!(err, Error::Corrupt { offset, .. } if offset >= sum),
            "{err}"
        );
        let edited = text.replace("\"vocab_size\": 257", "\"vocab_size\": 258");
        let err = Manifest::from_bytes(edited.as_bytes(), p).unwrap_err();
        assert!(
            matches!(err, Error::Corrupt { offset, .. } if offset == sum),
            "{err}"
        );
    }

    fn arb_manifest() -> impl proptest::strategy::Strategy<Value = Manifest> {
        use proptest::prelude::*;
        let shard = (
            0u64..1000,
            0u64..100_000,
            any::<u64>(),
            any::<u64>(),
            0u32..99_999,
        );
        (
            proptest::collection::vec(shard, 0..5),
            any::<bool>(),
            proptest::option::of(0u64..70_000),
            proptest::option::of("[a-z0-9:./-]{0,20}"),
            1u64..1_000,
        )
            .prop_map(|(shards, wide, eos, tokenizer, generation)| {
                let mut m = Manifest::new(if wide { DType::U32 } else { DType::U16 });
                m.generation = generation;
                m.eos_id = eos;
                m.vocab_size = eos.map(|e| e + 1);
                m.tokenizer = tokenizer;
                for (docs, tokens, b, i, n) in shards {
                    m.num_docs += docs;
                    m.num_tokens += tokens;
                    m.shards.push(ShardEntry {
                        bin: format!("part-{n:05}.g{generation}.bin"),
                        idx: format!("part-{n:05}.g{generation}.idx"),
                        num_docs: docs,
                        num_tokens: tokens,
                        bin_xxh3: hex(b),
                        idx_xxh3: hex(i),
                        ..ShardEntry::default()
                    });
                }
                m
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Any manifest survives writing and parsing unchanged.
        #[test]
        fn any_manifest_round_trips(m in arb_manifest()) {
            let p = Path::new("manifest.json");
            proptest::prop_assert_eq!(Manifest::from_bytes(&m.to_bytes().unwrap(), p).unwrap(), m);
        }

        /// Random byte edits never panic: the parser returns the original
        /// manifest (an edit JSON does not see, such as in whitespace) or an
        /// error of the corrupt/version kind that names the file.
        #[test]
        fn mutated_manifest_never_panics(
            m in arb_manifest(),
            edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..6),
            cut in proptest::option::of(any::<proptest::sample::Index>()),
        ) {
            let p = Path::new("dir/manifest.json");
            let mut bytes = m.to_bytes().unwrap();
            for (at, b) in edits {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len()));
            }
            match Manifest::from_bytes(&bytes, p) {
                Ok(parsed) => proptest::prop_assert_eq!(parsed, m),
                Err(Error::Corrupt { path, offset, .. }) => {
                    proptest::prop_assert_eq!(path, p.to_path_buf());
                    proptest::prop_assert!(offset <= bytes.len() as u64);
                }
                Err(Error::UnsupportedVersion { .. }) => {}
                Err(other) => proptest::prop_assert!(false, "unexpected error kind: {other}"),
            }
        }
    }
}
