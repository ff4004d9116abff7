//! Markdown to roff, for the README sections the manual pages are made of
//! (see the parent module): pulldown-cmark's events in, `roff` calls out.
//!
//! Separate because it knows nothing of pages or of the README's markers:
//! it renders any markdown the pages use (headings, emphasis, code, lists,
//! tables, links).

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use roff::{bold, italic, line_break, roman, Inline, Roff};

/// Appends markdown `md` to `r`: `##` headings become sections, deeper ones
/// subsections; code is bold, code blocks are shown as they are; a table
/// becomes a list tagged with its first column.
pub fn markdown(r: &mut Roff, md: &str) {
    let mut w = Writer::default();
    let mut opts = Options::empty();
    opts.insert(Options::ENABLE_TABLES);
    for ev in Parser::new_ext(md, opts) {
        w.event(r, ev);
    }
    w.flush(r);
}

#[derive(Default)]
struct Writer {
    line: Vec<Inline>,
    bold: usize,
    italic: usize,
    heading: Option<(HeadingLevel, String)>,
    /// A line break in the source, put before the next text: roff escapes
    /// a leading `.` or `'` only within one piece of text, so the break
    /// and the line after it must be one.
    newline: bool,
    code_block: Option<String>,
    /// Open lists: the next number of an ordered one.
    lists: Vec<Option<u64>>,
    /// Paragraphs seen in the current list item (the first follows its tag).
    item_paragraphs: usize,
    table: Option<Table>,
    link: Vec<String>,
}

#[derive(Default)]
struct Table {
    head: Vec<Vec<Inline>>,
    rows: Vec<Vec<Vec<Inline>>>,
    cell: Vec<Inline>,
    row: Vec<Vec<Inline>>,
    in_head: bool,
}

/// Text of inlines, for headings.
fn plain(inlines: &[Inline]) -> String {
    inlines
        .iter()
        .map(|i| match i {
            Inline::Roman(t) | Inline::Bold(t) | Inline::Italic(t) => t.as_str(),
            Inline::LineBreak => " ",
        })
        .collect()
}

impl Writer {
    fn push(&mut self, text: &str) {
        let owned;
        let text = if std::mem::take(&mut self.newline) {
            owned = format!("\n{text}");
            owned.as_str()
        } else {
            text
        };
        let inline = if self.bold > 0 {
            bold(text)
        } else if self.italic > 0 {
            italic(text)
        } else {
            roman(text)
        };
        match (&mut self.table, &mut self.heading) {
            (_, Some((_, h))) => h.push_str(text),
            (Some(t), None) => t.cell.push(inline),
            (None, None) => self.line.push(inline),
        }
    }

    fn flush(&mut self, r: &mut Roff) {
        if !self.line.is_empty() {
            r.text(std::mem::take(&mut self.line));
        }
    }

    fn paragraph(&mut self, r: &mut Roff) {
        self.flush(r);
        if self.lists.is_empty() {
            r.control("PP", []);
        } else {
            self.item_paragraphs += 1;
            if self.item_paragraphs > 1 {
                r.control("sp", []);
            }
        }
    }

    fn event(&mut self, r: &mut Roff, ev: Event) {
        match ev {
            Event::Start(Tag::Heading { level, .. }) => {
                self.flush(r);
                self.heading = Some((level, String::new()));
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, text)) = self.heading.take() {
                    if level <= HeadingLevel::H2 {
                        r.control("SH", [text.to_uppercase().as_str()]);
                    } else {
                        r.control("SS", [text.as_str()]);
                    }
                }
            }
            Event::Start(Tag::Paragraph) => self.paragraph(r),
            Event::End(TagEnd::Paragraph) => self.flush(r),
            Event::Start(Tag::CodeBlock(_)) => {
                self.flush(r);
                self.code_block = Some(String::new());
            }
            Event::End(TagEnd::CodeBlock) => {
                let code = self.code_block.take().unwrap_or_default();
                if self.lists.is_empty() {
                    r.control("PP", []);
                } else {
                    r.control("sp", []);
                }
                r.control("RS", ["4"]);
                r.control("nf", []);
                for l in code.trim_end().lines() {
                    r.text([roman(l)]);
                }
                r.control("fi", []);
                r.control("RE", []);
            }
            Event::Start(Tag::List(start)) => {
                self.flush(r);
                if !self.lists.is_empty() {
                    r.control("RS", []);
                }
                self.lists.push(start);
            }
            Event::End(TagEnd::List(_)) => {
                self.flush(r);
                self.lists.pop();
                if !self.lists.is_empty() {
                    r.control("RE", []);
                } else {
                    r.control("PP", []);
                }
            }
            Event::Start(Tag::Item) => {
                self.flush(r);
                self.item_paragraphs = 0;
                match self.lists.last_mut() {
                    Some(Some(n)) => {
                        let tag = format!("{n}.");
                        *n += 1;
                        r.control("IP", [tag.as_str(), "4"]);
                    }
                    _ => {
                        r.control("IP", ["\\(bu", "2"]);
                    }
                }
                // A tight item's text comes without a paragraph.
                self.item_paragraphs = 1;
            }
            Event::End(TagEnd::Item) => self.flush(r),
            Event::Start(Tag::BlockQuote(_)) => {
                self.flush(r);
                r.control("RS", []);
            }
            Event::End(TagEnd::BlockQuote(_)) => {
                self.flush(r);
                r.control("RE", []);
            }
            Event::Start(Tag::Emphasis) => self.italic += 1,
            Event::End(TagEnd::Emphasis) => self.italic = self.italic.saturating_sub(1),
            Event::Start(Tag::Strong) => self.bold += 1,
            Event::End(TagEnd::Strong) => self.bold = self.bold.saturating_sub(1),
            Event::Start(Tag::Link { dest_url, .. }) => self.link.push(dest_url.to_string()),
            Event::End(TagEnd::Link) => {
                // Links within the README mean nothing in a page; a web
                // address is shown.
                if let Some(url) = self.link.pop() {
                    if url.starts_with("http://") || url.starts_with("https://") {
                        self.push(&format!(" <{url}>"));
                    }
                }
            }
            Event::Start(Tag::Table(_)) => {
                self.flush(r);
                self.table = Some(Table::default());
            }
            Event::Start(Tag::TableHead) => {
                if let Some(t) = &mut self.table {
                    t.in_head = true;
                }
            }
            Event::End(TagEnd::TableHead) => {
                if let Some(t) = &mut self.table {
                    t.in_head = false;
                    t.head = std::mem::take(&mut t.row);
                }
            }
            Event::End(TagEnd::TableCell) => {
                if let Some(t) = &mut self.table {
                    let cell = std::mem::take(&mut t.cell);
                    t.row.push(cell);
                }
            }
            Event::End(TagEnd::TableRow) => {
                if let Some(t) = &mut self.table {
                    if !t.in_head {
                        let row = std::mem::take(&mut t.row);
                        t.rows.push(row);
                    }
                }
            }
            Event::End(TagEnd::Table) => {
                if let Some(t) = self.table.take() {
                    table(r, t);
                }
            }
            Event::Text(t) => {
                if let Some(code) = &mut self.code_block {
                    code.push_str(&t);
                } else {
                    self.push(&t);
                }
            }
            Event::Code(t) => {
                self.bold += 1;
                self.push(&t);
                self.bold -= 1;
            }
            Event::SoftBreak if self.heading.is_some() => self.push(" "),
            Event::SoftBreak => self.newline = true,
            Event::HardBreak if self.table.is_none() && self.heading.is_none() => {
                self.line.push(line_break());
            }
            // The README's own comments (the markers among them) and
            // inline HTML are not part of a page.
            _ => {}
        }
    }
}

/// A table as a list tagged with its first column; the middle columns
/// follow the tag as "heading: value" lines, the last one as the text.
fn table(r: &mut Roff, t: Table) {
    let heads: Vec<String> = t.head.iter().map(|h| plain(h)).collect();
    for row in t.rows {
        let n = row.len();
        let mut cells = row.into_iter();
        r.control("TP", []);
        r.text(cells.next().unwrap_or_default());
        for (i, cell) in cells.enumerate() {
            let col = i + 1;
            if col + 1 < n {
                let mut line = vec![roman(format!(
                    "{}: ",
                    heads.get(col).map_or("", String::as_str)
                ))];
                line.extend(cell);
                r.text(line);
                r.control("br", []);
            } else {
                r.text(cell);
            }
        }
    }
    r.control("PP", []);
}
