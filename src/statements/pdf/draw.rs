//! Placed items to a PDF, with krilla: glyphs with the fonts subset and embedded (and a
//! ToUnicode map each, so the text can be copied and searched), rules as stroked paths,
//! the logo as an image.
//!
//! The bytes depend on the items and the metadata alone: krilla reads no clock and draws no
//! random numbers (its file id is a hash of the content, its font subset tags too), and
//! without its `rayon` feature nothing runs in parallel. The creation date is the
//! statement's own.

use chrono::{DateTime, Datelike, Timelike, Utc};
use krilla::Document;
use krilla::color::rgb;
use krilla::geom::{PathBuilder, Point, Size, Transform};
use krilla::metadata::{self, Metadata};
use krilla::page::PageSettings;
use krilla::paint::{Fill, Stroke};
use krilla::surface::Surface;
use krilla::text::KrillaGlyph;

use super::layout::{Item, PAGE_H, PAGE_W, Rgb};
use super::text::{FaceId, Shaped, Weight, face};

/// What the document information says.
pub struct Info {
    pub title: String,
    pub author: String,
    pub subject: String,
    pub created: DateTime<Utc>,
}

/// Bold CJK text (Droid has no bold) is filled and stroked with a line this many ems wide.
const FAKE_BOLD: f32 = 0.03;

/// The pages as a PDF.
pub fn document(pages: &[Vec<Item>], info: &Info) -> Result<Vec<u8>, String> {
    let settings =
        PageSettings::from_wh(PAGE_W, PAGE_H).ok_or_else(|| "bad page size".to_owned())?;
    let mut doc = Document::new();
    doc.set_metadata(metadata(info));
    for items in pages {
        let mut page = doc.start_page_with(settings.clone());
        let mut surface = page.surface();
        for item in items {
            draw(&mut surface, item);
        }
        surface.finish();
        page.finish();
    }
    doc.finish().map_err(|e| e.to_string())
}

fn metadata(info: &Info) -> Metadata {
    let at = info.created;
    let date = metadata::DateTime::new(u16::try_from(at.year()).unwrap_or(0))
        .month(u8::try_from(at.month()).unwrap_or(1))
        .day(u8::try_from(at.day()).unwrap_or(1))
        .hour(u8::try_from(at.hour()).unwrap_or(0))
        .minute(u8::try_from(at.minute()).unwrap_or(0))
        .second(u8::try_from(at.second()).unwrap_or(0))
        .utc_offset_hour(0);
    Metadata::new()
        .title(info.title.clone())
        .authors(vec![info.author.clone()])
        // The information dictionary's /Subject.
        .description(info.subject.clone())
        .creator("partner-gateway".into())
        .producer("partner-gateway".into())
        .creation_date(date)
}

fn color(c: Rgb) -> rgb::Color {
    rgb::Color::new(c.0, c.1, c.2)
}

fn draw(surface: &mut Surface<'_>, item: &Item) {
    match item {
        Item::Text {
            x,
            y,
            weight,
            size,
            color: c,
            line,
        } => text(surface, *x, *y, *weight, *size, color(*c), line),
        Item::Rule {
            x1,
            x2,
            y,
            width,
            color: c,
        } => {
            let mut pb = PathBuilder::new();
            pb.move_to(*x1, *y);
            pb.line_to(*x2, *y);
            if let Some(path) = pb.finish() {
                surface.set_fill(None);
                surface.set_stroke(Some(Stroke {
                    paint: color(*c).into(),
                    width: *width,
                    ..Stroke::default()
                }));
                surface.draw_path(&path);
                surface.set_stroke(None);
            }
        }
        Item::Image {
            x,
            y,
            width,
            height,
            logo,
        } => {
            if let Some(size) = Size::from_wh(*width, *height) {
                surface.push_transform(&Transform::from_translate(*x, *y));
                surface.draw_image(logo.image(), size);
                surface.pop();
            }
        }
    }
}

fn text(
    surface: &mut Surface<'_>,
    x: f32,
    y: f32,
    weight: Weight,
    size: f32,
    color: rgb::Color,
    line: &Shaped,
) {
    surface.set_fill(Some(Fill {
        paint: color.into(),
        ..Fill::default()
    }));
    let mut x = x;
    for (id, glyphs) in line.runs() {
        let fake_bold = weight == Weight::Bold && id == FaceId::Fallback;
        surface.set_stroke(fake_bold.then(|| Stroke {
            paint: color.into(),
            width: FAKE_BOLD * size,
            ..Stroke::default()
        }));
        let krilla: Vec<KrillaGlyph> = glyphs.iter().map(|g| g.to_krilla()).collect();
        // The whole line's text goes with every run: each glyph's range points into it.
        surface.draw_glyphs(
            Point::from_xy(x, y),
            &krilla,
            face(id).pdf(),
            &line.text,
            size,
            false,
        );
        x += glyphs.iter().map(|g| g.advance).sum::<f32>() * size;
    }
    surface.set_stroke(None);
    surface.set_fill(None);
}
