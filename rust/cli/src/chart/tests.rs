use proptest::prelude::*;
use tokenloom_core::order::report::PairStats;
use tokenloom_core::order::Report;

use super::*;

/// A decoded PNG: width, height, RGB rows.
struct Decoded {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Decoded {
    fn of(bytes: &[u8]) -> Self {
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        buf.truncate(info.buffer_size());
        Decoded {
            width: info.width,
            height: info.height,
            rgb: buf,
        }
    }

    fn at(&self, x: u32, y: u32) -> Rgb {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Pixels of `color` in column `x`, rows `[top, bottom)`.
    fn column_count(&self, x: u32, top: u32, bottom: u32, color: Rgb) -> u32 {
        (top..bottom).filter(|&y| self.at(x, y) == color).count() as u32
    }
}

fn stats(histogram: Vec<u64>, mean: f64) -> PairStats {
    let n = histogram.iter().sum();
    PairStats {
        pairs: n,
        edges: n / 2,
        measured: n,
        mean_similarity: mean,
        histogram,
    }
}

fn report(ordered: Vec<u64>, random: Vec<u64>) -> Report {
    Report {
        docs: 500,
        ordered: 480,
        ordered_pairs: stats(ordered, 0.412),
        random_pairs: stats(random, 0.103),
        similarity_ratio: 0.412 / 0.103,
        similarity_source: "embeddings".into(),
        ..Report::default()
    }
}

/// Checks every bar of the decoded chart against the histograms: its
/// height in its own colour, and no bar colour anywhere else in the plot.
fn check_bars(img: &Decoded, r: &Report) {
    let o = fractions(&r.ordered_pairs.histogram);
    let q = fractions(&r.random_pairs.histogram);
    let peak = o.iter().chain(&q).copied().fold(0.0, f64::max);
    let l = Layout::new(o.len() as u32, peak);
    let mut in_bars = vec![false; WIDTH as usize];
    for (s, (fr, color)) in [(&o, ORDERED), (&q, RANDOM)].into_iter().enumerate() {
        for (bin, &f) in fr.iter().enumerate() {
            let cols = l.bar_columns(bin as u32, s as u32);
            for x in cols.clone() {
                in_bars[x as usize] = true;
                let h = img.column_count(x, l.top, l.bottom, color);
                assert_eq!(h, l.bar_height(f), "series {s} bin {bin} column {x}");
                // The bar is solid from the axis up.
                if h > 0 {
                    assert_eq!(img.at(x, l.bottom - 1), color);
                    assert_eq!(img.at(x, l.bottom - h), color);
                }
            }
            // Proportional: within one pixel of the fraction's share of the axis.
            let exact = f / l.y_max * (l.bottom - l.top) as f64;
            let h = img.column_count(cols.start, l.top, l.bottom, color) as f64;
            assert!((h - exact).abs() <= 1.0, "{h} vs {exact}");
        }
    }
    for x in (0..WIDTH).filter(|&x| !in_bars[x as usize]) {
        for y in l.top..l.bottom {
            let p = img.at(x, y);
            assert!(p != ORDERED && p != RANDOM, "bar colour at ({x}, {y})");
        }
    }
}

#[test]
fn bars_follow_the_histograms() {
    let mut ordered = vec![0u64; 40];
    let mut random = vec![0u64; 40];
    // Ordered pairs pile up at high similarity, random ones around zero.
    for (bin, n) in [(28, 40), (30, 120), (32, 300), (34, 90), (37, 2)] {
        ordered[bin] = n;
    }
    for (bin, n) in [(18, 60), (20, 400), (21, 80), (25, 8)] {
        random[bin] = n;
    }
    let r = report(ordered, random);
    let img = Decoded::of(&render(&r).unwrap().to_png().unwrap());
    assert_eq!((img.width, img.height), (WIDTH, HEIGHT));
    check_bars(&img, &r);
    // A bin with more pairs has a taller bar, in pixels of its own colour.
    let peak = fractions(&r.random_pairs.histogram)[20];
    let l = Layout::new(40, peak);
    let height = |bin, s, color| img.column_count(l.bar_columns(bin, s).start, 0, HEIGHT, color);
    assert!(height(32, 0, ORDERED) > height(30, 0, ORDERED));
    assert!(height(30, 0, ORDERED) > height(28, 0, ORDERED));
    assert!(height(20, 1, RANDOM) > 4 * height(18, 1, RANDOM));
    assert_eq!(height(20, 0, ORDERED), 0);
    assert_eq!(height(32, 1, RANDOM), 0);
    // The tallest bar reaches most of the way up the axis.
    assert!(height(20, 1, RANDOM) > (l.bottom - l.top) * 2 / 3);
    // A 2-pair bin still shows.
    assert!(height(37, 0, ORDERED) >= 1);
}

#[test]
fn title_and_legend_are_drawn_from_the_report() {
    let band = |r: &Report| {
        let c = render(r).unwrap();
        let mut ink = Vec::new();
        for y in 0..90 {
            for x in 0..WIDTH {
                ink.push(c.pixel(x, y) == Some(INK));
            }
        }
        let swatches = (0..90)
            .flat_map(|y| (0..WIDTH).map(move |x| (x, y)))
            .filter(|&(x, y)| c.pixel(x, y) == Some(ORDERED) || c.pixel(x, y) == Some(RANDOM))
            .count();
        (ink, swatches)
    };
    let a = report(vec![1; 40], vec![2; 40]);
    let mut b = a.clone();
    b.ordered_pairs.mean_similarity = 0.9;
    b.similarity_ratio = 0.9 / 0.103;
    let (ink_a, swatches) = band(&a);
    let (ink_b, _) = band(&b);
    assert!(ink_a.iter().filter(|&&i| i).count() > 2000, "no title text");
    assert_ne!(ink_a, ink_b, "the title ignores the means");
    // Two legend swatches of 16 x 16 pixels.
    assert_eq!(swatches, 2 * 16 * 16);
}

#[test]
fn empty_and_mismatched_histograms() {
    // No measured pair: an empty plot, still a chart.
    let r = report(vec![0; 40], vec![0; 40]);
    let img = Decoded::of(&render(&r).unwrap().to_png().unwrap());
    check_bars(&img, &r);
    let e = render(&report(vec![1; 40], vec![1; 20])).unwrap_err();
    assert!(e.to_string().contains("40 and 20 bins"), "{e}");
    assert!(render(&report(vec![], vec![])).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn any_histograms_draw_true_to_scale(
        (ordered, random) in (1usize..=60).prop_flat_map(|bins| (
            proptest::collection::vec(prop_oneof![Just(0u64), 0u64..50, 0u64..100_000], bins),
            proptest::collection::vec(prop_oneof![Just(0u64), 0u64..50, 0u64..100_000], bins),
        )),
    ) {
        let r = report(ordered, random);
        let img = Decoded::of(&render(&r).unwrap().to_png().unwrap());
        prop_assert_eq!((img.width, img.height), (WIDTH, HEIGHT));
        check_bars(&img, &r);
    }
}
