//! Text for the statement PDF: the font chain, shaping, measuring, wrapping.
//!
//! Three fonts are compiled in (`assets/fonts/`, where they come from in its README): Noto
//! Sans Regular and Bold for Latin, Greek and Cyrillic (and the no-break spaces ICU puts in
//! numbers), then Droid Sans Fallback for what Noto lacks, chiefly CJK. The face is chosen
//! per character (a combining mark stays with its base), each run is shaped with rustybuzz,
//! and widths come from the shaped advances, so what is measured is exactly what is drawn.
//! Text is laid out left to right in logical order: no bidi (neither font has Arabic or
//! Hebrew letters anyway).

use std::ops::Range;
use std::sync::LazyLock;

use krilla::text::{Font as PdfFont, GlyphId, KrillaGlyph};
use rustybuzz::{Direction, UnicodeBuffer};

static NOTO_REGULAR: &[u8] = include_bytes!("../../../assets/fonts/NotoSans-Regular.ttf");
static NOTO_BOLD: &[u8] = include_bytes!("../../../assets/fonts/NotoSans-Bold.ttf");
static DROID: &[u8] = include_bytes!("../../../assets/fonts/DroidSansFallback.ttf");

/// The weight a style asks for. Bold CJK has no face of its own (Droid has no bold): it is
/// drawn with the regular face, filled and stroked (`draw.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    Regular,
    Bold,
}

/// One of the compiled-in faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaceId {
    Regular,
    Bold,
    /// Droid Sans Fallback: CJK and whatever else Noto lacks.
    Fallback,
}

/// A face, parsed once for shaping (rustybuzz) and once for writing (krilla).
pub struct Face {
    shaper: rustybuzz::Face<'static>,
    pdf: PdfFont,
    upem: f32,
}

impl Face {
    fn load(data: &'static [u8]) -> Option<Face> {
        let shaper = rustybuzz::Face::from_slice(data, 0)?;
        let upem = shaper.units_per_em() as f32;
        let pdf = PdfFont::new(data.into(), 0)?;
        Some(Face { shaper, pdf, upem })
    }

    /// krilla's handle on the face (cheap to clone).
    pub fn pdf(&self) -> PdfFont {
        self.pdf.clone()
    }

    fn has(&self, c: char) -> bool {
        self.shaper.glyph_index(c).is_some()
    }
}

struct Faces {
    regular: Face,
    bold: Face,
    fallback: Face,
}

fn load_faces() -> Option<Faces> {
    Some(Faces {
        regular: Face::load(NOTO_REGULAR)?,
        bold: Face::load(NOTO_BOLD)?,
        fallback: Face::load(DROID)?,
    })
}

/// Parsed on first use. The fonts are constants of the build, so a failure is a broken
/// build, not bad input: `the_fonts_parse` below is the proof.
static FACES: LazyLock<Faces> = LazyLock::new(|| {
    #[allow(clippy::expect_used, reason = "compiled-in fonts, checked by a test")]
    load_faces().expect("the fonts in assets/fonts parse")
});

/// The face behind an id.
pub fn face(id: FaceId) -> &'static Face {
    match id {
        FaceId::Regular => &FACES.regular,
        FaceId::Bold => &FACES.bold,
        FaceId::Fallback => &FACES.fallback,
    }
}

/// One shaped glyph. Sizes are in ems (font units divided by the face's units per em).
#[derive(Debug, Clone, PartialEq)]
pub struct Glyph {
    pub face: FaceId,
    pub id: u32,
    /// The bytes of the line's text this glyph's cluster stands for.
    pub range: Range<usize>,
    pub advance: f32,
    pub x_offset: f32,
    pub y_offset: f32,
}

impl Glyph {
    /// For krilla, with `text_range` into the line's text (which the ToUnicode map, and so
    /// copy and paste and pdftotext, is built from).
    pub fn to_krilla(&self) -> KrillaGlyph {
        KrillaGlyph::new(
            GlyphId::new(self.id),
            self.advance,
            self.x_offset,
            self.y_offset,
            0.0,
            self.range.clone(),
            None,
        )
    }
}

/// One line of text, shaped: what is measured and what is drawn.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Shaped {
    pub text: String,
    pub glyphs: Vec<Glyph>,
}

impl Shaped {
    /// Width in points at `size`.
    pub fn width(&self, size: f32) -> f32 {
        self.glyphs.iter().map(|g| g.advance).sum::<f32>() * size
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Glyphs `range` (whole clusters) as a line of their own: text and ranges rebased.
    fn slice(&self, glyphs: Range<usize>) -> Shaped {
        let Some(part) = self.glyphs.get(glyphs) else {
            return Shaped::default();
        };
        let (Some(first), Some(last)) = (part.first(), part.last()) else {
            return Shaped::default();
        };
        let bytes = first.range.start..last.range.end;
        let Some(text) = self.text.get(bytes.clone()) else {
            return Shaped::default();
        };
        Shaped {
            text: text.to_owned(),
            glyphs: part
                .iter()
                .map(|g| Glyph {
                    range: g.range.start - bytes.start..g.range.end - bytes.start,
                    ..g.clone()
                })
                .collect(),
        }
    }

    /// `other` after this line.
    fn append(&mut self, other: &Shaped) {
        let base = self.text.len();
        self.text.push_str(&other.text);
        self.glyphs.extend(other.glyphs.iter().map(|g| Glyph {
            range: g.range.start + base..g.range.end + base,
            ..g.clone()
        }));
    }

    /// Runs of glyphs in one face, in order: what one `draw_glyphs` call draws.
    pub fn runs(&self) -> impl Iterator<Item = (FaceId, &[Glyph])> {
        self.glyphs
            .chunk_by(|a, b| a.face == b.face)
            .filter_map(|run| Some((run.first()?.face, run)))
    }
}

/// Text as it is drawn: a newline stays (a paragraph break); other whitespace but the
/// no-break spaces becomes a space; a carriage return and a soft hyphen go; a control
/// character, or one no font has (an emoji, a dingbat), becomes U+FFFD, so the page and its
/// text layer show that something was there (a .notdef box would copy as nothing).
fn clean(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\n' => Some('\n'),
            '\r' | '\u{AD}' => None,
            '\u{A0}' | '\u{202F}' | '\u{2007}' => Some(c),
            c if c.is_whitespace() => Some(' '),
            c if c.is_control() => Some('\u{FFFD}'),
            c if joins_previous(c) || invisible(c) => Some(c),
            c if !FACES.regular.has(c) && !FACES.fallback.has(c) => Some('\u{FFFD}'),
            c => Some(c),
        })
        .collect()
}

/// Format characters the shaper hides (default ignorables): zero-width spaces, bidi
/// controls, tags. Kept: they draw nothing either way.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{E0000}'..='\u{E0FFF}')
}

/// A character that belongs to the one before it: a combining mark, a variation selector,
/// a joiner. It takes the face of its base, so the two shape together.
fn joins_previous(c: char) -> bool {
    unicode_ccc::get_canonical_combining_class(c)
        != unicode_ccc::CanonicalCombiningClass::NotReordered
        || matches!(c,
            '\u{0300}'..='\u{036F}'
            | '\u{1AB0}'..='\u{1AFF}'
            | '\u{1DC0}'..='\u{1DFF}'
            | '\u{20D0}'..='\u{20FF}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FE20}'..='\u{FE2F}'
            | '\u{200C}' | '\u{200D}'
            | '\u{E0100}'..='\u{E01EF}')
}

/// Shapes one line as it is (no cleaning, no wrapping).
fn shape_raw(text: &str, weight: Weight) -> Shaped {
    let first = match weight {
        Weight::Regular => FaceId::Regular,
        Weight::Bold => FaceId::Bold,
    };
    // Runs of one face: the first face of the chain that has the character, else the
    // first face (its .notdef box).
    let mut runs: Vec<(FaceId, Range<usize>)> = Vec::new();
    for (i, c) in text.char_indices() {
        let end = i + c.len_utf8();
        if let Some(last) = runs.last_mut()
            && joins_previous(c)
        {
            last.1.end = end;
            continue;
        }
        let id = [first, FaceId::Fallback]
            .into_iter()
            .find(|&id| face(id).has(c))
            .unwrap_or(first);
        match runs.last_mut() {
            Some(last) if last.0 == id => last.1.end = end,
            _ => runs.push((id, i..end)),
        }
    }
    let mut glyphs = Vec::new();
    for (id, range) in runs {
        let Some(run) = text.get(range.clone()) else {
            continue;
        };
        let f = face(id);
        let mut buffer = UnicodeBuffer::new();
        buffer.push_str(run);
        buffer.set_direction(Direction::LeftToRight);
        buffer.guess_segment_properties();
        let out = rustybuzz::shape(&f.shaper, &[], buffer);
        let infos = out.glyph_infos();
        let positions = out.glyph_positions();
        for (i, (info, pos)) in infos.iter().zip(positions).enumerate() {
            let start = info.cluster as usize;
            // A cluster runs to the next glyph's different cluster (as krilla's own
            // shaper does), else to the end of the run.
            let end = infos
                .get(i + 1..)
                .and_then(|rest| rest.iter().find(|n| n.cluster != info.cluster))
                .map_or(run.len(), |n| n.cluster as usize);
            glyphs.push(Glyph {
                face: id,
                id: info.glyph_id,
                range: range.start + start..range.start + end.max(start),
                advance: pos.x_advance as f32 / f.upem,
                x_offset: pos.x_offset as f32 / f.upem,
                y_offset: pos.y_offset as f32 / f.upem,
            });
        }
    }
    Shaped {
        text: text.to_owned(),
        glyphs,
    }
}

/// One line, shaped (newlines and tabs become spaces).
pub fn shape(text: &str, weight: Weight) -> Shaped {
    shape_raw(&clean(text).replace('\n', " "), weight)
}

/// Ideographs, kana and Hangul syllables: a line may break between two of them.
fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{1100}'..='\u{11FF}'      // Hangul Jamo
        | '\u{2E80}'..='\u{2FDF}'    // CJK radicals, Kangxi radicals
        | '\u{3040}'..='\u{30FF}'    // Hiragana, Katakana
        | '\u{3100}'..='\u{312F}'    // Bopomofo
        | '\u{3130}'..='\u{318F}'    // Hangul compatibility Jamo
        | '\u{31F0}'..='\u{31FF}'    // Katakana phonetic extensions
        | '\u{3400}'..='\u{4DBF}'    // CJK extension A
        | '\u{4E00}'..='\u{9FFF}'    // CJK unified ideographs
        | '\u{AC00}'..='\u{D7AF}'    // Hangul syllables
        | '\u{F900}'..='\u{FAFF}'    // CJK compatibility ideographs
        | '\u{FF66}'..='\u{FF9F}'    // half-width Katakana
        | '\u{20000}'..='\u{3FFFF}') // CJK extensions B and later
}

/// May not start a line (closing brackets, CJK stops and commas, small kana).
fn no_break_before(c: char) -> bool {
    matches!(
        c,
        ')' | ']'
            | '}'
            | ','
            | '.'
            | ':'
            | ';'
            | '!'
            | '?'
            | '%'
            | '、'
            | '。'
            | '，'
            | '．'
            | '：'
            | '；'
            | '！'
            | '？'
            | '％'
            | '・'
            | 'ー'
            | '々'
            | '）'
            | '］'
            | '｝'
            | '」'
            | '』'
            | '】'
            | '〕'
            | '〉'
            | '》'
            | '〙'
            | '〛'
            | 'ぁ'
            | 'ぃ'
            | 'ぅ'
            | 'ぇ'
            | 'ぉ'
            | 'っ'
            | 'ゃ'
            | 'ゅ'
            | 'ょ'
            | 'ゎ'
            | 'ァ'
            | 'ィ'
            | 'ゥ'
            | 'ェ'
            | 'ォ'
            | 'ッ'
            | 'ャ'
            | 'ュ'
            | 'ョ'
            | 'ヮ'
            | 'ヵ'
            | 'ヶ'
    )
}

/// May not end a line (opening brackets).
fn no_break_after(c: char) -> bool {
    matches!(
        c,
        '(' | '['
            | '{'
            | '（'
            | '［'
            | '｛'
            | '「'
            | '『'
            | '【'
            | '〔'
            | '〈'
            | '《'
            | '〘'
            | '〚'
    )
}

/// Whether a line may break between `before` and `after` (neither a space): between CJK
/// characters, or between CJK and other text, unless a bracket or stop forbids it.
fn cjk_break(before: char, after: char) -> bool {
    (is_cjk(before) || is_cjk(after)) && !no_break_before(after) && !no_break_after(before)
}

/// Breaks text into lines no wider than `max` points at `size`: at spaces and between CJK
/// characters, and inside a word (by cluster) only when the word alone is wider than the
/// line (an id, a long number, a run of Latin letters). A newline starts a new line; runs
/// of spaces count as one. Blank text gives no lines.
pub fn wrap(text: &str, weight: Weight, size: f32, max: f32) -> Vec<Shaped> {
    let mut out = Vec::new();
    let text = clean(text);
    if text.chars().all(char::is_whitespace) {
        return out;
    }
    for para in text.split('\n') {
        let para: Vec<&str> = para.split(' ').filter(|w| !w.is_empty()).collect();
        let shaped = shape_raw(&para.join(" "), weight);
        if shaped.glyphs.is_empty() {
            out.push(Shaped::default());
            continue;
        }
        wrap_shaped(&shaped, size, max, &mut out);
    }
    while out.last().is_some_and(Shaped::is_empty) {
        out.pop();
    }
    out
}

/// A cluster of a shaped line: the glyphs standing for some bytes of its text.
struct Cluster {
    glyphs: Range<usize>,
    /// Its first character, and the last character of the cluster before it.
    first: char,
    previous: Option<char>,
    space: bool,
    advance: f32,
}

fn clusters(line: &Shaped) -> Vec<Cluster> {
    let mut out: Vec<Cluster> = Vec::new();
    for (i, g) in line.glyphs.iter().enumerate() {
        match out.last_mut() {
            Some(c)
                if line
                    .glyphs
                    .get(c.glyphs.start)
                    .is_some_and(|s| s.range == g.range) =>
            {
                c.glyphs.end = i + 1;
                c.advance += g.advance;
            }
            _ => {
                let text = line.text.get(g.range.clone()).unwrap_or("");
                let previous = line
                    .text
                    .get(..g.range.start)
                    .and_then(|t| t.chars().next_back());
                out.push(Cluster {
                    glyphs: i..i + 1,
                    first: text.chars().next().unwrap_or(' '),
                    previous,
                    space: text == " ",
                    advance: g.advance,
                });
            }
        }
    }
    out
}

/// Greedy wrap of one paragraph (single spaces, none leading or trailing).
fn wrap_shaped(line: &Shaped, size: f32, max: f32, out: &mut Vec<Shaped>) {
    let clusters = clusters(line);
    let max_em = if size > 0.0 { max / size } else { 0.0 };
    // A line may end before cluster i when a space precedes it or CJK rules allow it.
    let may_break = |i: usize| -> bool {
        let Some(c) = clusters.get(i) else {
            return true;
        };
        if c.space {
            return false;
        }
        match (i.checked_sub(1).and_then(|p| clusters.get(p)), c.previous) {
            (Some(p), _) if p.space => true,
            (Some(_), Some(prev)) => cjk_break(prev, c.first),
            _ => false,
        }
    };
    let mut start = 0;
    while start < clusters.len() {
        let mut used = 0.0_f32;
        let mut end = start;
        let mut last_break = None;
        while let Some(c) = clusters.get(end) {
            if end > start && may_break(end) {
                last_break = Some(end);
            }
            // Spaces may hang past the edge: they are trimmed.
            if !c.space && end > start && used + c.advance > max_em {
                break;
            }
            used += c.advance;
            end += 1;
        }
        if end < clusters.len() {
            // Back to the last break, else (a word wider than the line) cut here; at least
            // one cluster a line, so even a too-narrow column makes progress.
            end = last_break.unwrap_or(end).max(start + 1);
        }
        let mut last = end;
        while last > start && clusters.get(last - 1).is_some_and(|c| c.space) {
            last -= 1;
        }
        let glyphs = match (
            clusters.get(start),
            last.checked_sub(1).and_then(|l| clusters.get(l)),
        ) {
            (Some(a), Some(b)) if last > start => a.glyphs.start..b.glyphs.end,
            _ => 0..0,
        };
        out.push(line.slice(glyphs));
        start = end;
        while clusters.get(start).is_some_and(|c| c.space) {
            start += 1;
        }
    }
}

/// One line, cut with "..." if it is wider than `max` points (for the footer, which has
/// room for one line only; the full text is in the body).
pub fn fit(text: &str, weight: Weight, size: f32, max: f32) -> Shaped {
    let line = shape(text, weight);
    if line.width(size) <= max {
        return line;
    }
    let dots = shape_raw("...", weight);
    let room = if size > 0.0 {
        (max - dots.width(size)) / size
    } else {
        0.0
    };
    let mut used = 0.0;
    let mut end = 0;
    for c in clusters(&line) {
        if used + c.advance > room {
            break;
        }
        used += c.advance;
        end = c.glyphs.end;
    }
    let mut cut = line.slice(0..end);
    // No space before the dots.
    while cut.text.ends_with(' ') {
        cut.text.pop();
        cut.glyphs.pop();
    }
    cut.append(&dots);
    cut
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn width(text: &str, weight: Weight, size: f32) -> f32 {
        shape(text, weight).width(size)
    }

    fn texts(lines: &[Shaped]) -> Vec<&str> {
        lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn the_fonts_parse() {
        let faces = load_faces().expect("fonts parse");
        assert_eq!(faces.regular.upem, 1000.0);
        assert_eq!(faces.bold.upem, 1000.0);
        assert!(faces.fallback.upem > 0.0);
        // What each face is in the chain for.
        for c in ['A', 'ł', 'Ω', 'Ж', '€', '\u{A0}', '\u{202F}', '\u{2026}'] {
            assert!(faces.regular.has(c), "Noto Sans lacks {c:?}");
            assert!(faces.bold.has(c), "Noto Sans Bold lacks {c:?}");
        }
        for c in ['東', '京', 'あ', 'カ', '한', '。'] {
            assert!(!faces.regular.has(c));
            assert!(faces.fallback.has(c), "Droid lacks {c:?}");
        }
    }

    #[test]
    fn each_character_takes_the_first_face_that_has_it() {
        let s = shape("Tokyo 東京大学 ok", Weight::Regular);
        let faces: Vec<(FaceId, &str)> = s
            .runs()
            .map(|(f, gs)| {
                let a = gs.first().unwrap().range.start;
                let b = gs.last().unwrap().range.end;
                (f, &s.text[a..b])
            })
            .collect();
        assert_eq!(
            faces,
            vec![
                (FaceId::Regular, "Tokyo "),
                (FaceId::Fallback, "東京大学"),
                (FaceId::Regular, " ok"),
            ]
        );
        // Bold Latin has its own face; bold CJK falls back to the regular Droid.
        let b = shape("Ab東", Weight::Bold);
        assert_eq!(b.glyphs[0].face, FaceId::Bold);
        assert_eq!(b.glyphs[2].face, FaceId::Fallback);
        // A combining mark stays with its base, whichever face has the mark.
        let m = shape("東\u{301}", Weight::Regular);
        assert!(m.glyphs.iter().all(|g| g.face == FaceId::Fallback));
        // Every byte of the text is covered by exactly the clusters, in order.
        for t in [
            "Łódź Uniwersytet",
            "e\u{301}x",
            "Πανεπιστήμιο",
            "a東b",
            "ffi fl",
        ] {
            let s = shape(t, Weight::Regular);
            let mut at = 0;
            for g in &s.glyphs {
                assert!(g.range.start <= at, "{t}: {g:?}");
                at = g.range.end.max(at);
            }
            assert_eq!(at, t.len(), "{t}");
        }
    }

    #[test]
    fn widths_come_from_the_font() {
        // The shaped advances are the font's own (hmtx; no kerning pair in "Hello"):
        // Noto Sans 2.004 has H 741, e 564, l 258, o 605 units of 1000.
        let hello = shape("Hello", Weight::Regular);
        let noto = &face(FaceId::Regular).shaper;
        let hmtx: Vec<u16> = "Hello"
            .chars()
            .map(|c| {
                noto.glyph_hor_advance(noto.glyph_index(c).unwrap())
                    .unwrap()
            })
            .collect();
        assert_eq!(hmtx, vec![741, 564, 258, 258, 605]);
        let units: Vec<u16> = hello
            .glyphs
            .iter()
            .map(|g| (g.advance * 1000.0).round() as u16)
            .collect();
        assert_eq!(units, hmtx);
        assert!((width("Hello", Weight::Regular, 10.0) - 24.26).abs() < 0.001);
        assert!(width("Hello", Weight::Bold, 10.0) > width("Hello", Weight::Regular, 10.0));
        // An ideograph is one em wide.
        assert!((width("東", Weight::Regular, 10.0) - 10.0).abs() < 0.01);
    }

    #[test]
    fn wrapping_breaks_at_spaces_then_inside_long_words() {
        let w = width("aaa bbb", Weight::Regular, 10.0);
        let lines = wrap("aaa bbb ccc", Weight::Regular, 10.0, w + 0.01);
        assert_eq!(texts(&lines), vec!["aaa bbb", "ccc"]);
        let lines = wrap("aaa   bbb\tccc", Weight::Regular, 10.0, w + 0.01);
        assert_eq!(texts(&lines), vec!["aaa bbb", "ccc"]);
        for l in wrap(&"W".repeat(500), Weight::Bold, 9.0, 50.0) {
            assert!(l.width(9.0) <= 50.0);
            assert!(!l.text.is_empty());
        }
        assert!(wrap("   ", Weight::Regular, 8.0, 100.0).is_empty());
        assert!(wrap("\n\n", Weight::Regular, 8.0, 100.0).is_empty());
        assert_eq!(
            texts(&wrap("a\n\nb\n", Weight::Regular, 8.0, 100.0)),
            vec!["a", "", "b"]
        );
        // A column narrower than one glyph still makes progress, one cluster a line.
        assert_eq!(wrap("WW", Weight::Regular, 8.0, 1.0).len(), 2);
        // A word that doesn't fit moves to the next line whole.
        let lines = wrap("a abcdefghij", Weight::Regular, 10.0, 55.0);
        assert_eq!(texts(&lines), vec!["a", "abcdefghij"]);
    }

    #[test]
    fn cjk_wraps_between_ideographs_but_not_before_a_stop() {
        // Four ideographs a line.
        let lines = wrap("東京大学病院の検査料金", Weight::Regular, 10.0, 40.5);
        assert_eq!(texts(&lines), vec!["東京大学", "病院の検", "査料金"]);
        for l in &lines {
            assert!(l.width(10.0) <= 40.5);
        }
        // The full stop may not start a line: the ideograph before it goes along.
        let lines = wrap("東京大学。病院", Weight::Regular, 10.0, 40.5);
        assert_eq!(texts(&lines), vec!["東京大", "学。病院"]);
        // Mixed: a Latin word is not split when it fits.
        let lines = wrap("請求書INV-2026東京", Weight::Regular, 10.0, 60.0);
        let all: String = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(all, "請求書INV-2026東京");
        assert!(
            lines.iter().any(|l| l.text.contains("INV-2026")),
            "{lines:?}"
        );
    }

    #[test]
    fn fit_cuts_with_dots() {
        let full = shape("abcdef", Weight::Regular);
        assert_eq!(fit("abcdef", Weight::Regular, 10.0, 100.0), full);
        let room = width("ab...", Weight::Regular, 10.0) + 0.01;
        let cut = fit("abcdef", Weight::Regular, 10.0, room);
        assert_eq!(cut.text, "ab...");
        assert!(cut.width(10.0) <= room);
        assert_eq!(cut.glyphs.last().unwrap().range, 4..5);
        assert_eq!(
            fit("東京大学病院", Weight::Regular, 10.0, 30.0).text,
            "東京..."
        );
        assert_eq!(
            fit("東京大学病院", Weight::Regular, 10.0, 25.0).text,
            "東..."
        );
    }

    #[test]
    fn control_characters_do_not_reach_the_page() {
        let s = shape("a\u{0}b\u{7}\r\n\u{AD}c\u{A0}d", Weight::Regular);
        assert_eq!(s.text, "a\u{FFFD}b\u{FFFD} c\u{A0}d");
        // No font has these: the replacement character, which Noto has.
        let s = shape("ok ✓ \u{1F600}", Weight::Regular);
        assert_eq!(s.text, "ok \u{FFFD} \u{FFFD}");
        assert!(s.glyphs.iter().all(|g| g.id != 0), "{s:?}");
    }
}
