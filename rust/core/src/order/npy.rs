//! Embedding vectors on disk: 2-D little-endian float16 or float32 `.npy`
//! files (what `numpy.save` writes and `numpy.load(mmap_mode="r")` reads),
//! memory-mapped and read in place, and a set of them standing for the
//! documents of one dataset in order ("embedding shards").

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use half::f16;

use super::vectors::Values;
use crate::error::{Error, IoContext, Result};
use crate::io::MappedFile;

const MAGIC: &[u8; 6] = b"\x93NUMPY";
const FIX: &str =
    "write the embeddings with numpy.save as a C-ordered 2-D float16 or float32 array";

/// Element type of an embedding file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// `<f2`.
    F16,
    /// `<f4`.
    F32,
}

impl Dtype {
    /// The numpy name (`"float16"`, `"float32"`).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F16 => "float16",
            Dtype::F32 => "float32",
        }
    }
    fn descr(self) -> &'static str {
        match self {
            Dtype::F16 => "<f2",
            Dtype::F32 => "<f4",
        }
    }
    fn size(self) -> usize {
        match self {
            Dtype::F16 => 2,
            Dtype::F32 => 4,
        }
    }
}

/// A 2-D `.npy` file mapped read-only.
#[derive(Debug)]
pub struct NpyMatrix {
    map: MappedFile,
    /// The same file, for reads that should not stay resident (see
    /// [`VectorShards::similarity`]).
    file: File,
    dtype: Dtype,
    rows: usize,
    cols: usize,
    data_at: usize,
}

/// The value of `key` in a `.npy` header dict (`'key': value`), up to the
/// next top-level comma or closing brace.
fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim())
}

impl NpyMatrix {
    /// Maps and checks a 2-D float16/float32 `.npy` file.
    pub fn open(path: &Path) -> Result<Self> {
        let map = MappedFile::open(path)?;
        let b = map.bytes();
        let bad = |at: usize, what: String| Error::corrupt(path, at as u64, what, FIX);
        if b.len() < 10 || &b[..6] != MAGIC {
            return Err(bad(0, "not a .npy file (no \\x93NUMPY magic)".into()));
        }
        let (len, start) = match b[6] {
            1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
            2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
            v => return Err(bad(6, format!(".npy version {v} is not supported"))),
        };
        let header = b
            .get(start..start + len)
            .and_then(|h| std::str::from_utf8(h).ok())
            .ok_or_else(|| bad(start, "the header is cut short or not text".into()))?;
        let descr = field(header, "descr").map(|d| d.trim_matches(['\'', '"']));
        let dtype = match descr {
            Some("<f2") => Dtype::F16,
            Some("<f4") => Dtype::F32,
            other => {
                return Err(bad(
                    start,
                    format!(
                        "dtype {} is not float16 or float32 (little-endian)",
                        other.unwrap_or("?")
                    ),
                ))
            }
        };
        if field(header, "fortran_order") != Some("False") {
            return Err(bad(start, "the array is not in C order".into()));
        }
        let shape: Vec<usize> = field(header, "shape")
            .map(|s| {
                s.trim_matches(['(', ')'])
                    .split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(str::parse)
                    .collect::<std::result::Result<Vec<usize>, _>>()
            })
            .and_then(|r| r.ok())
            .ok_or_else(|| bad(start, "the shape cannot be read".into()))?;
        let [rows, cols] = shape[..] else {
            return Err(bad(
                start,
                format!("shape {shape:?} is not 2-D [documents, dim]"),
            ));
        };
        let data_at = start + len;
        let want = rows
            .checked_mul(cols)
            .and_then(|x| x.checked_mul(dtype.size()))
            .and_then(|x| x.checked_add(data_at));
        if want != Some(b.len()) {
            return Err(bad(
                b.len(),
                format!(
                    "a [{rows}, {cols}] {} array needs {} bytes, the file has {}",
                    dtype.name(),
                    want.map_or("too many".into(), |w| w.to_string()),
                    b.len()
                ),
            ));
        }
        if data_at % dtype.size() != 0 {
            return Err(bad(start, "the data is not aligned".into()));
        }
        let file = File::open(path).at(path)?;
        Ok(NpyMatrix {
            map,
            file,
            dtype,
            rows,
            cols,
            data_at,
        })
    }

    /// Rows (documents).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (the dimension).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The element type.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The file.
    pub fn path(&self) -> &Path {
        self.map.path()
    }

    /// The values, row-major, read in place.
    pub fn values(&self) -> Result<Values<'_>> {
        self.map.check_unchanged()?;
        let data = &self.map.bytes()[self.data_at..];
        let bad = || {
            Error::corrupt(
                self.path(),
                self.data_at as u64,
                "the data is not aligned",
                FIX,
            )
        };
        Ok(match self.dtype {
            Dtype::F16 => Values::F16(bytemuck::try_cast_slice(data).map_err(|_| bad())?),
            Dtype::F32 => Values::F32(bytemuck::try_cast_slice(data).map_err(|_| bad())?),
        })
    }
}

/// The embedding shards of a dataset: `.npy` files whose rows, in file
/// order, are the dataset's documents. All share one dtype and dimension.
#[derive(Debug)]
pub struct VectorShards {
    shards: Vec<NpyMatrix>,
    starts: Vec<usize>,
    dim: usize,
}

impl VectorShards {
    /// Maps `paths` and checks that they hold `num_docs` rows in all, of one
    /// dtype and one dimension.
    pub fn open(paths: &[PathBuf], num_docs: usize) -> Result<Self> {
        let shards = paths
            .iter()
            .map(|p| NpyMatrix::open(p))
            .collect::<Result<Vec<_>>>()?;
        let Some(first) = shards.first() else {
            return Err(Error::invalid("embeddings", "no embedding shards given"));
        };
        for s in &shards {
            if s.dtype != first.dtype {
                return Err(Error::invalid(
                    "embeddings",
                    format!(
                        "{} holds {} but {} holds {}; write every shard with one dtype",
                        s.path().display(),
                        s.dtype.name(),
                        first.path().display(),
                        first.dtype.name()
                    ),
                ));
            }
            if s.cols != first.cols || s.cols == 0 {
                return Err(Error::invalid(
                    "embeddings",
                    format!(
                        "{} has dimension {} but {} has {}; every shard needs the same d >= 1",
                        s.path().display(),
                        s.cols,
                        first.path().display(),
                        first.cols
                    ),
                ));
            }
        }
        let mut starts = vec![0];
        for s in &shards {
            starts.push(starts[starts.len() - 1] + s.rows);
        }
        let total = starts[starts.len() - 1];
        if total != num_docs {
            return Err(Error::invalid(
                "embeddings",
                format!(
                    "the {} shards hold {total} rows but the dataset has {num_docs} documents; give one row per document, shards in document order",
                    shards.len()
                ),
            ));
        }
        Ok(VectorShards {
            dim: first.cols,
            shards,
            starts,
        })
    }

    /// Checks the shards holding rows `range` against their checksum files,
    /// where they have one (the staged engine's own shards do; given ones
    /// carry none: their shape, dtype and size are all that is checked).
    pub fn check_sealed(&self, range: std::ops::Range<usize>) -> Result<()> {
        for (s, shard) in self.shards.iter().enumerate() {
            let (a, b) = (self.starts[s], self.starts[s + 1]);
            if a < range.end && range.start < b {
                super::seal::check(shard.path())?;
            }
        }
        Ok(())
    }

    /// Rows in all.
    pub fn len(&self) -> usize {
        self.starts[self.starts.len() - 1]
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The element type.
    pub fn dtype(&self) -> Dtype {
        self.shards[0].dtype
    }

    /// Row `i` as float32 (as stored, not scaled) into `out` (`dim` long).
    pub fn row_into(&self, i: usize, out: &mut [f32]) -> Result<()> {
        let s = self.starts.partition_point(|&x| x <= i) - 1;
        let shard = self
            .shards
            .get(s)
            .ok_or_else(|| Error::invalid("row", format!("{i} is out of range")))?;
        let r = i - self.starts[s];
        match shard.values()? {
            Values::F32(v) => out.copy_from_slice(&v[r * self.dim..(r + 1) * self.dim]),
            Values::F16(v) => {
                for (o, x) in out.iter_mut().zip(&v[r * self.dim..(r + 1) * self.dim]) {
                    *o = x.to_f32();
                }
            }
        }
        Ok(())
    }

    /// Row `i` scaled to unit length into `out`; `false` (and `out` zero)
    /// for a zero row. A non-finite value is an error naming the file and row.
    pub fn unit_row_into(&self, i: usize, out: &mut [f32]) -> Result<bool> {
        self.row_into(i, out)?;
        if out.iter().any(|x| !x.is_finite()) {
            let s = self.starts.partition_point(|&x| x <= i) - 1;
            return Err(Error::invalid(
                "embeddings",
                format!(
                    "{} row {} (document {i}) holds NaN or infinity; fix or drop that document's embedding",
                    self.shards[s].path().display(),
                    i - self.starts[s]
                ),
            ));
        }
        let norm = out.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        if norm == 0.0 {
            return Ok(false);
        }
        out.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
        Ok(true)
    }

    /// Row `i` read from the file (not through the map) into `out` as
    /// float32, scaled to unit length; `false` for a zero or non-finite row.
    fn read_unit_row(&self, i: usize, bytes: &mut Vec<u8>, out: &mut [f32]) -> bool {
        use std::os::unix::fs::FileExt;
        let s = self.starts.partition_point(|&x| x <= i) - 1;
        let Some(shard) = self.shards.get(s) else {
            return false;
        };
        let size = shard.dtype.size();
        let at = shard.data_at + (i - self.starts[s]) * self.dim * size;
        bytes.resize(self.dim * size, 0);
        if shard.file.read_exact_at(bytes, at as u64).is_err() {
            return false;
        }
        match shard.dtype {
            Dtype::F16 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            Dtype::F32 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
        }
        let norm = out.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        if norm == 0.0 || !norm.is_finite() {
            return false;
        }
        out.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
        true
    }

    /// Inner product of the unit-length rows `a` and `b` (0 when either is
    /// zero). The rows are read from the files, not through the maps: the
    /// report reads every row once in random order, and mapped pages would
    /// stay resident (and count to the process's memory) until the end.
    pub fn similarity(&self, a: usize, b: usize) -> f32 {
        thread_local! {
            static BUF: std::cell::RefCell<(Vec<u8>, Vec<f32>, Vec<f32>)> =
                std::cell::RefCell::new(Default::default());
        }
        BUF.with_borrow_mut(|(bytes, x, y)| {
            x.resize(self.dim, 0.0);
            y.resize(self.dim, 0.0);
            if self.read_unit_row(a, bytes, x) && self.read_unit_row(b, bytes, y) {
                x.iter().zip(y.iter()).map(|(p, q)| p * q).sum()
            } else {
                0.0
            }
        })
    }
}

/// Writes a `.npy` file of `rows × cols` float16 values, streamed row block
/// by row block, atomically (a temporary name renamed into place once whole
/// and synced), with its checksum beside it (see [`super::seal`]).
pub struct NpyWriter {
    out: Option<BufWriter<File>>,
    tmp: PathBuf,
    dest: PathBuf,
    rows: usize,
    cols: usize,
    written: usize,
}

impl NpyWriter {
    /// Starts `dest` (a float16 `[rows, cols]` array).
    pub fn create(dest: &Path, rows: usize, cols: usize) -> Result<Self> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dest.with_file_name(format!(".tmp.{name}.{}", std::process::id()));
        let mut header = format!(
            "{{'descr': '{}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}",
            Dtype::F16.descr()
        );
        let total = (10 + header.len() + 1).next_multiple_of(64);
        while 10 + header.len() + 1 < total {
            header.push(' ');
        }
        header.push('\n');
        let mut out = BufWriter::new(File::create(&tmp).at(&tmp)?);
        let mut head = MAGIC.to_vec();
        head.extend_from_slice(&[1, 0]);
        head.extend_from_slice(&(header.len() as u16).to_le_bytes());
        head.extend_from_slice(header.as_bytes());
        let mut w = NpyWriter {
            out: None,
            tmp,
            dest: dest.to_path_buf(),
            rows,
            cols,
            written: 0,
        };
        out.write_all(&head).at(&w.tmp)?;
        w.out = Some(out);
        Ok(w)
    }

    /// Appends whole rows (`cols` values each), stored as float16.
    pub fn push(&mut self, values: &[f32]) -> Result<()> {
        let halves: Vec<f16> = values.iter().map(|&x| f16::from_f32(x)).collect();
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| Error::invalid("writer", "already finished"))?;
        out.write_all(bytemuck::cast_slice(&halves)).at(&self.tmp)?;
        self.written += values.len() / self.cols.max(1);
        Ok(())
    }

    /// Syncs the file and renames it into place; fails unless every row came.
    pub fn finish(mut self) -> Result<()> {
        if self.written != self.rows {
            return Err(Error::invalid(
                "writer",
                format!("{} rows written of {}", self.written, self.rows),
            ));
        }
        let out = self
            .out
            .take()
            .ok_or_else(|| Error::invalid("writer", "already finished"))?;
        let file = out
            .into_inner()
            .map_err(|e| Error::io(&self.tmp, e.into_error()))?;
        file.sync_all().at(&self.tmp)?;
        drop(file);
        let sealed = super::seal::seal(&self.tmp, &self.dest);
        let renamed = sealed.and_then(|()| std::fs::rename(&self.tmp, &self.dest).at(&self.dest));
        if renamed.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        renamed
    }
}

impl Drop for NpyWriter {
    fn drop(&mut self) {
        if self.out.is_some() {
            self.out = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_shards_read_back_and_mismatches_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.npy");
        let mut w = NpyWriter::create(&a, 3, 2).unwrap();
        w.push(&[1.0, 0.0, 0.5, -0.5]).unwrap();
        w.push(&[0.0, 0.0]).unwrap();
        w.finish().unwrap();
        let m = NpyMatrix::open(&a).unwrap();
        assert_eq!((m.rows(), m.cols(), m.dtype()), (3, 2, Dtype::F16));
        let s = VectorShards::open(std::slice::from_ref(&a), 3).unwrap();
        let mut row = [0f32; 2];
        assert!(s.unit_row_into(1, &mut row).unwrap());
        assert!((row[0] - 0.70710677).abs() < 1e-3 && (row[1] + 0.70710677).abs() < 1e-3);
        assert!(!s.unit_row_into(2, &mut row).unwrap());
        // Read from the file, the same unit rows: (1, 0)·(0.707, -0.707), and 0 for a zero row.
        assert!((s.similarity(0, 1) - 0.70710677).abs() < 1e-3);
        assert!((s.similarity(1, 1) - 1.0).abs() < 1e-3);
        assert_eq!(s.similarity(0, 2), 0.0);
        let err = VectorShards::open(std::slice::from_ref(&a), 4)
            .unwrap_err()
            .to_string();
        assert!(err.contains("hold 3 rows but the dataset has 4"), "{err}");
        // A writer dropped before its last row leaves nothing behind.
        let b = dir.path().join("b.npy");
        let mut w = NpyWriter::create(&b, 2, 2).unwrap();
        w.push(&[1.0, 0.0]).unwrap();
        assert!(w.finish().is_err());
        assert!(!b.exists());
        // Only a.npy and its checksum.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        assert!(crate::order::seal::check(&a).unwrap());
    }
}
