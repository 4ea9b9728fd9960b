//! The FIFO memory of the sketches of recently kept samples.

use super::distance::{sq_norm, sq_norms};
use crate::error::{checked_size, try_filled, Error, Result};

/// A ring buffer of `capacity` rows of `dim` floats; the oldest row is
/// overwritten first once it is full. Each slot's squared norm is kept
/// beside it, so a step computes norms for the new rows only.
#[derive(Clone, Debug, PartialEq)]
pub struct SketchBuffer {
    dim: usize,
    capacity: usize,
    rows: Vec<f32>,
    norms: Vec<f64>,
    next: usize,
    count: usize,
}

impl SketchBuffer {
    /// An empty buffer; its memory is allocated fallibly, so a size too
    /// large for the machine is an error, not an abort.
    pub fn new(capacity: usize, dim: usize) -> Result<Self> {
        let floats = checked_size(capacity, dim, "buffer_size")?;
        Ok(SketchBuffer {
            dim,
            capacity,
            rows: try_filled(floats, 0.0, "buffer_size")?,
            norms: try_filled(if dim == 0 { 0 } else { capacity }, 0.0, "buffer_size")?,
            next: 0,
            count: 0,
        })
    }

    /// A buffer restored from [`SketchBuffer::parts`].
    pub fn from_parts(
        capacity: usize,
        dim: usize,
        rows: Vec<f32>,
        next: usize,
        count: usize,
    ) -> Result<Self> {
        if Some(rows.len()) != capacity.checked_mul(dim)
            || count > capacity
            || (capacity > 0 && next >= capacity)
        {
            return Err(Error::invalid(
                "state",
                format!(
                    "the buffer state holds {} floats, next row {next}, {count} rows, but a buffer of {capacity} rows of {dim} floats was asked for; restore a state saved with the same buffer_size and sketch size",
                    rows.len()
                ),
            ));
        }
        // Until the buffer is full, rows are written in order from the first.
        if count < capacity && next != count {
            return Err(Error::invalid(
                "state",
                format!("the buffer state has {count} of {capacity} rows filled but names row {next} as the next to write (it must be {count}); the state is damaged"),
            ));
        }
        Ok(SketchBuffer {
            dim,
            capacity,
            norms: sq_norms(&rows, dim),
            rows,
            next,
            count,
        })
    }

    /// `(rows, next row to write, valid rows)` for saving.
    pub fn parts(&self) -> (&[f32], usize, usize) {
        (&self.rows, self.next, self.count)
    }

    /// Floats per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True before the first push.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The valid rows (in storage order, which does not matter for the mean
    /// distance).
    pub fn valid(&self) -> &[f32] {
        &self.rows[..self.count * self.dim]
    }

    /// `|row|²` of each of [`SketchBuffer::valid`]'s rows, in f64.
    pub(crate) fn valid_norms(&self) -> &[f64] {
        &self.norms[..self.count.min(self.norms.len())]
    }

    /// Appends one row, evicting the oldest when full.
    pub fn push(&mut self, row: &[f32]) {
        if self.capacity == 0 {
            return;
        }
        let at = self.next * self.dim;
        self.rows[at..at + self.dim].copy_from_slice(row);
        if let Some(n) = self.norms.get_mut(self.next) {
            *n = sq_norm(row);
        }
        self.next = (self.next + 1) % self.capacity;
        self.count = (self.count + 1).min(self.capacity);
    }
}
