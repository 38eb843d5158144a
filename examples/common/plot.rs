//! PNG line plots (plotters, bitmap backend). Text uses a TTF loaded at run
//! time (DejaVu Sans from the system, or ATTNSKETCH_FONT); without one the
//! plot is drawn without text.

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// One line: name and (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One panel.
pub struct Panel {
    pub title: String,
    pub series: Vec<Series>,
}

fn load_font() -> bool {
    let candidates = [
        std::env::var("ATTNSKETCH_FONT").unwrap_or_default(),
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".into(),
        "/usr/share/fonts/TTF/DejaVuSans.ttf".into(),
    ];
    for c in candidates.iter().filter(|c| !c.is_empty()) {
        if let Ok(b) = std::fs::read(c) {
            let b: &'static [u8] = Box::leak(b.into_boxed_slice());
            if register_font("sans-serif", FontStyle::Normal, b).is_ok() {
                return true;
            }
        }
    }
    false
}

const COLORS: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
    RGBColor(127, 127, 127),
    RGBColor(174, 199, 232),
    RGBColor(255, 152, 150),
];

/// attnsketch's own lines are black and thicker; peers take the palette.
fn style(name: &str, i: usize) -> (RGBColor, u32) {
    if name.starts_with("attnsketch") {
        (BLACK, 3)
    } else {
        (COLORS[i % COLORS.len()], 2)
    }
}

/// Panels in a grid, log-log axes, legend per panel.
pub fn write_png(path: &str, panels: &[Panel], xlabel: &str, ylabel: &str) -> Result<(), String> {
    write_png_captioned(path, "", panels, xlabel, ylabel)
}

/// `write_png` with a line of text at the bottom (when and where it was measured).
pub fn write_png_captioned(
    path: &str,
    caption: &str,
    panels: &[Panel],
    xlabel: &str,
    ylabel: &str,
) -> Result<(), String> {
    let text = load_font();
    let cols = 2.min(panels.len()).max(1);
    let rows = panels.len().div_ceil(cols);
    let foot = if caption.is_empty() { 0 } else { 28 };
    let root =
        BitMapBackend::new(path, (560 * cols as u32, 420 * rows as u32 + foot)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (root, bottom) = root.split_vertically(420 * rows as u32);
    if text && foot > 0 {
        bottom
            .draw_text(
                caption,
                &("sans-serif", 14).into_font().color(&BLACK),
                (12, 6),
            )
            .map_err(|e| e.to_string())?;
    }
    let areas = root.split_evenly((rows, cols));
    for (panel, area) in panels.iter().zip(areas) {
        let pts = panel
            .series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|p| p.1 > 0.0 && p.1.is_finite());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in pts {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if x0 > x1 {
            continue;
        }
        let mut b = ChartBuilder::on(&area);
        b.margin(12);
        if text {
            b.caption(&panel.title, ("sans-serif", 18))
                .x_label_area_size(36)
                .y_label_area_size(56);
        }
        let mut chart = b
            .build_cartesian_2d(
                (x0 / 1.2..x1 * 1.2).log_scale(),
                (y0 / 1.5..y1 * 1.5).log_scale(),
            )
            .map_err(|e| e.to_string())?;
        if text {
            chart
                .configure_mesh()
                .x_desc(xlabel)
                .y_desc(ylabel)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| format!("{y:.2e}"))
                .draw()
                .map_err(|e| e.to_string())?;
        } else {
            chart
                .configure_mesh()
                .disable_x_mesh()
                .disable_y_mesh()
                .draw()
                .map_err(|e| e.to_string())?;
        }
        for (i, s) in panel.series.iter().enumerate() {
            let (c, w) = style(&s.name, i);
            let p: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|p| p.1 > 0.0 && p.1.is_finite())
                .collect();
            let series = chart
                .draw_series(LineSeries::new(p.clone(), c.stroke_width(w)))
                .map_err(|e| e.to_string())?;
            if text {
                series.label(s.name.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(w))
                });
            }
            chart
                .draw_series(p.iter().map(|&xy| Circle::new(xy, 3, c.filled())))
                .map_err(|e| e.to_string())?;
        }
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(|e| e.to_string())?;
        }
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
