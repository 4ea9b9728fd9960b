//! An RGB pixel canvas: filled rectangles, text in a built-in 8x8 bitmap
//! font (no system fonts needed) and PNG encoding.

use font8x8::{UnicodeFonts, BASIC_FONTS};

/// A colour, red-green-blue.
pub type Rgb = [u8; 3];

/// Width and height of one glyph of the bitmap font, at scale 1.
pub const GLYPH: u32 = 8;

/// An image of `width` x `height` RGB pixels, row-major.
#[derive(Clone, Debug)]
pub struct Canvas {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Canvas {
    /// A canvas filled with `background`.
    pub fn new(width: u32, height: u32, background: Rgb) -> Self {
        let pixels = background
            .iter()
            .copied()
            .cycle()
            .take(width as usize * height as usize * 3)
            .collect();
        Canvas {
            width,
            height,
            pixels,
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The colour at (`x`, `y`); `None` outside the canvas.
    pub fn pixel(&self, x: u32, y: u32) -> Option<Rgb> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let at = (y as usize * self.width as usize + x as usize) * 3;
        Some([self.pixels[at], self.pixels[at + 1], self.pixels[at + 2]])
    }

    /// Fills the rectangle `[x0, x1) x [y0, y1)`, clipped to the canvas.
    pub fn fill(&mut self, x0: u32, y0: u32, x1: u32, y1: u32, color: Rgb) {
        let (x1, y1) = (x1.min(self.width), y1.min(self.height));
        for y in y0..y1 {
            for x in x0..x1 {
                let at = (y as usize * self.width as usize + x as usize) * 3;
                self.pixels[at..at + 3].copy_from_slice(&color);
            }
        }
    }

    /// Draws `text` left to right with its top-left corner at (`x`, `y`),
    /// each font pixel a `scale` x `scale` square.
    pub fn text(&mut self, x: u32, y: u32, text: &str, scale: u32, color: Rgb) {
        for (i, c) in text.chars().enumerate() {
            let left = x + i as u32 * GLYPH * scale;
            for_each_dot(c, |col, row| {
                let (px, py) = (left + col * scale, y + row * scale);
                self.fill(px, py, px + scale, py + scale, color);
            });
        }
    }

    /// Draws `text` turned a quarter left (reading bottom to top), with the
    /// bottom-left corner of its first glyph at (`x`, `y`).
    pub fn text_up(&mut self, x: u32, y: u32, text: &str, scale: u32, color: Rgb) {
        for (i, c) in text.chars().enumerate() {
            let base = i as u32 * GLYPH + 1;
            for_each_dot(c, |col, row| {
                let (px, py) = (x + row * scale, y.saturating_sub((base + col) * scale));
                self.fill(px, py, px + scale, py + scale, color);
            });
        }
    }

    /// The PNG encoding of the canvas (8-bit RGB).
    pub fn to_png(&self) -> Result<Vec<u8>, png::EncodingError> {
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, self.width, self.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&self.pixels)?;
        writer.finish()?;
        Ok(bytes)
    }
}

/// Width of `text` in pixels at `scale`.
pub fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * GLYPH * scale
}

/// Calls `dot(column, row)` for each set pixel of the glyph of `c`
/// (characters outside Basic Latin are drawn as `?`).
fn for_each_dot(c: char, mut dot: impl FnMut(u32, u32)) {
    let glyph = BASIC_FONTS
        .get(c)
        .or_else(|| BASIC_FONTS.get('?'))
        .unwrap_or_default();
    for (row, bits) in glyph.iter().enumerate() {
        for col in 0..GLYPH {
            // Bit 0 is the leftmost pixel of the row.
            if bits >> col & 1 == 1 {
                dot(col, row as u32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INK: Rgb = [0, 0, 0];
    const PAPER: Rgb = [255, 255, 255];

    fn inked(c: &Canvas) -> Vec<(u32, u32)> {
        let mut v = Vec::new();
        for y in 0..c.height() {
            for x in 0..c.width() {
                if c.pixel(x, y) == Some(INK) {
                    v.push((x, y));
                }
            }
        }
        v
    }

    #[test]
    fn text_draws_the_glyphs_scaled_and_turned() {
        // Each set bit of the font's 'L' is a 2 x 2 block, nothing else is inked.
        let mut flat = Canvas::new(40, 40, PAPER);
        flat.text(4, 4, "L", 2, INK);
        let dots = inked(&flat);
        let glyph = BASIC_FONTS.get('L').unwrap();
        let mut want = Vec::new();
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8u32 {
                if bits >> col & 1 == 1 {
                    for (dx, dy) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        want.push((4 + 2 * col + dx, 4 + 2 * row as u32 + dy));
                    }
                }
            }
        }
        want.sort_unstable_by_key(|&(x, y)| (y, x));
        assert!(want.len() > 40);
        assert_eq!(dots, want);
        assert_eq!(text_width("L", 2), 16);

        // Turned a quarter left, the same glyph is the same dots rotated.
        let mut up = Canvas::new(40, 40, PAPER);
        up.text_up(4, 36, "L", 2, INK);
        let mut turned: Vec<(u32, u32)> = inked(&up)
            .into_iter()
            .map(|(x, y)| (35 - y + 4, x))
            .collect();
        turned.sort_unstable();
        want.sort_unstable();
        assert_eq!(turned, want);
    }

    #[test]
    fn fill_clips_and_png_round_trips() {
        let mut c = Canvas::new(5, 3, PAPER);
        c.fill(3, 1, 99, 99, [1, 2, 3]);
        let bytes = c.to_png().unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (5, 3));
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(&buf[..info.buffer_size()], &c.pixels[..]);
        assert_eq!(c.pixel(4, 2), Some([1, 2, 3]));
        assert_eq!(c.pixel(2, 2), Some(PAPER));
        assert_eq!(c.pixel(5, 0), None);
    }
}
