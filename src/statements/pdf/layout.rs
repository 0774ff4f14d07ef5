//! Layout: cells wrap into lines, rows of cells into bands (one text line high), bands flow
//! onto pages, breaking where a page is full and repeating a table's header on the next.
//!
//! Coordinates are krilla's: points from the top-left corner of the page, y growing
//! downward. A text item's y is its baseline. Nothing here knows about PDF syntax.

use super::Logo;
use super::text::{self, Shaped, Weight};

// ---------------------------------------------------------------------------------------
// Page geometry (US Letter, in points, from the top).

pub const PAGE_W: f32 = 612.0;
pub const PAGE_H: f32 = 792.0;
pub const LEFT: f32 = 50.0;
pub const RIGHT: f32 = PAGE_W - 50.0;
pub const WIDTH: f32 = RIGHT - LEFT;
pub const TOP: f32 = 50.0;
/// Body text stops here; the footer lives below.
pub const BOTTOM: f32 = PAGE_H - 76.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rgb(pub u8, pub u8, pub u8);

pub const BLACK: Rgb = Rgb(0, 0, 0);
pub const GRAY: Rgb = Rgb(102, 102, 102);
pub const LIGHT: Rgb = Rgb(204, 204, 204);
pub const RED: Rgb = Rgb(191, 0, 0);
pub const AMBER: Rgb = Rgb(153, 84, 0);

#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub weight: Weight,
    pub size: f32,
    pub color: Rgb,
    /// Height of a line in this style.
    pub leading: f32,
}

pub const fn style(weight: Weight, size: f32, color: Rgb, leading: f32) -> Style {
    Style {
        weight,
        size,
        color,
        leading,
    }
}

/// Something drawn. In a band, `y` is measured down from the band's top; once placed on a
/// page, down from the page's top.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Text {
        x: f32,
        /// The baseline.
        y: f32,
        weight: Weight,
        size: f32,
        color: Rgb,
        line: Shaped,
    },
    Rule {
        x1: f32,
        x2: f32,
        y: f32,
        width: f32,
        color: Rgb,
    },
    Image {
        x: f32,
        /// The image's top edge.
        y: f32,
        width: f32,
        height: f32,
        logo: Logo,
    },
}

impl Item {
    fn placed(&self, top: f32) -> Item {
        let mut item = self.clone();
        match &mut item {
            Item::Text { y, .. } | Item::Rule { y, .. } | Item::Image { y, .. } => *y += top,
        }
        item
    }

    /// One line of text at a place of its own (the footer).
    pub fn text(x: f32, y: f32, line: Shaped, style: Style) -> Item {
        Item::Text {
            x,
            y,
            weight: style.weight,
            size: style.size,
            color: style.color,
            line,
        }
    }
}

/// One line's height of a page, with what is drawn in it.
#[derive(Debug, Clone)]
pub struct Band {
    pub height: f32,
    pub items: Vec<Item>,
}

pub fn height(bands: &[Band]) -> f32 {
    bands.iter().map(|b| b.height).sum()
}

enum CellLine {
    Text(Shaped, Style),
    Image { logo: Logo, width: f32, height: f32 },
}

/// A column of wrapped text lines (and perhaps an image).
pub struct Cell {
    x: f32,
    width: f32,
    right: bool,
    lines: Vec<CellLine>,
}

impl Cell {
    pub fn left((x, width): (f32, f32)) -> Cell {
        Cell {
            x,
            width,
            right: false,
            lines: Vec::new(),
        }
    }

    pub fn right((x, width): (f32, f32)) -> Cell {
        Cell {
            right: true,
            ..Cell::left((x, width))
        }
    }

    /// Adds text, wrapped to the cell's width.
    pub fn text(mut self, text: &str, style: Style) -> Cell {
        for line in text::wrap(text, style.weight, style.size, self.width) {
            self.lines.push(CellLine::Text(line, style));
        }
        self
    }

    /// Adds an image as a line of its own, scaled to fill a box of `max_w` by `max_h`
    /// points (narrowed to the cell) in one dimension, its aspect kept.
    pub fn image(mut self, logo: &Logo, max_w: f32, max_h: f32) -> Cell {
        let (w, h) = logo.size();
        let scale = (max_w.min(self.width) / w).min(max_h / h);
        if scale.is_finite() && scale > 0.0 {
            self.lines.push(CellLine::Image {
                logo: logo.clone(),
                width: w * scale,
                height: h * scale,
            });
        }
        self
    }
}

/// Cells side by side, as bands: band i holds line i of every cell, as high as its
/// tallest line. Text sits centred on the band so mixed sizes share a line neatly.
pub fn row(cells: &[Cell]) -> Vec<Band> {
    let n = cells.iter().map(|c| c.lines.len()).max().unwrap_or(0);
    let mut bands = Vec::with_capacity(n);
    for i in 0..n {
        let height = cells
            .iter()
            .filter_map(|c| c.lines.get(i))
            .map(|l| match l {
                CellLine::Text(_, s) => s.leading,
                CellLine::Image { height, .. } => *height,
            })
            .fold(0.0, f32::max);
        let mut items = Vec::new();
        for cell in cells {
            let at = |w: f32| {
                if cell.right {
                    cell.x + cell.width - w
                } else {
                    cell.x
                }
            };
            match cell.lines.get(i) {
                Some(CellLine::Text(line, s)) if !line.is_empty() => items.push(Item::text(
                    at(line.width(s.size)),
                    // Noto's capitals are 0.714 em high: this centres them on the band.
                    height / 2.0 + 0.36 * s.size,
                    line.clone(),
                    *s,
                )),
                Some(CellLine::Image {
                    logo,
                    width,
                    height,
                }) => items.push(Item::Image {
                    x: at(*width),
                    y: 0.0,
                    width: *width,
                    height: *height,
                    logo: logo.clone(),
                }),
                _ => {}
            }
        }
        bands.push(Band { height, items });
    }
    bands
}

/// One full-width paragraph.
pub fn para(text: &str, style: Style) -> Vec<Band> {
    row(&[Cell::left((LEFT, WIDTH)).text(text, style)])
}

/// Extra space under the last band.
pub fn pad(bands: &mut [Band], extra: f32) {
    if let Some(last) = bands.last_mut() {
        last.height += extra;
    }
}

pub fn rule_below(bands: &mut [Band], width: f32, color: Rgb) {
    if let Some(last) = bands.last_mut() {
        last.items.push(Item::Rule {
            x1: LEFT,
            x2: RIGHT,
            y: last.height,
            width,
            color,
        });
    }
}

pub fn rule_above(bands: &mut [Band], x1: f32, width: f32, color: Rgb) {
    if let Some(first) = bands.first_mut() {
        first.items.push(Item::Rule {
            x1,
            x2: RIGHT,
            y: 0.0,
            width,
            color,
        });
    }
}

/// Bands placed top to bottom, page after page.
pub struct Flow {
    pub pages: Vec<Vec<Item>>,
    /// Top of the next band.
    y: f32,
    /// Nothing but the repeated header is on this page yet: breaking again would not help.
    fresh: bool,
    /// Drawn at the top of every new page (a table's heading and column titles).
    pub repeat: Vec<Band>,
}

impl Flow {
    pub fn new() -> Flow {
        Flow {
            pages: vec![Vec::new()],
            y: TOP,
            fresh: true,
            repeat: Vec::new(),
        }
    }

    fn room(&self) -> f32 {
        BOTTOM - self.y
    }

    fn new_page(&mut self) {
        self.pages.push(Vec::new());
        self.y = TOP;
        let repeat = std::mem::take(&mut self.repeat);
        for band in &repeat {
            self.draw(band);
        }
        self.repeat = repeat;
        self.fresh = true;
    }

    fn draw(&mut self, band: &Band) {
        let top = self.y;
        if let Some(page) = self.pages.last_mut() {
            page.extend(band.items.iter().map(|i| i.placed(top)));
        }
        self.y += band.height;
        self.fresh = false;
    }

    pub fn band(&mut self, band: &Band) {
        if band.height > self.room() && !self.fresh {
            self.new_page();
        }
        self.draw(band);
    }

    /// Starts a new page unless `h` points fit here; not if they wouldn't fit on a new
    /// page either (a huge row then splits across pages rather than leaving one blank).
    pub fn need(&mut self, h: f32) {
        let page = BOTTOM - TOP - height(&self.repeat);
        if h > self.room() && !self.fresh && h <= page {
            self.new_page();
        }
    }

    /// Bands kept on one page where they fit on one.
    pub fn keep(&mut self, bands: &[Band]) {
        self.need(height(bands));
        for band in bands {
            self.band(band);
        }
    }

    pub fn gap(&mut self, h: f32) {
        if !self.fresh {
            self.y += h;
        }
    }
}
