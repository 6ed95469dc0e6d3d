//! The workspace README's benchmark table: the report writes it between two
//! markers, so that it always comes from the same run as `BENCHMARKS.md`.

/// The line before the generated table.
pub const START: &str = "<!-- benchmarks: written by `cargo xtask bench`; do not edit by hand -->";
/// The line after it.
pub const END: &str = "<!-- end of the benchmarks written by `cargo xtask bench` -->";

/// `text` with everything between the [`START`] and [`END`] lines replaced by
/// `generated`. An error says which marker is missing or out of order, so that
/// a README edited by hand is never written over blindly.
///
/// ```
/// use benches::readme::{END, START, splice};
/// let text = format!("intro\n{START}\nold\n{END}\nrest\n");
/// let new = splice(&text, "new\n").unwrap();
/// assert_eq!(new, format!("intro\n{START}\nnew\n{END}\nrest\n"));
/// assert!(splice("no markers\n", "new\n").is_err());
/// ```
pub fn splice(text: &str, generated: &str) -> Result<String, String> {
    let start = marker_line(text, START, 0)
        .ok_or_else(|| format!("the README has no start marker line `{START}`"))?;
    let body = start + START.len();
    let end = marker_line(text, END, body).ok_or_else(|| {
        format!("the README has no end marker line `{END}` after its start marker")
    })?;
    let mut out = String::with_capacity(text.len() + generated.len());
    out.push_str(&text[..body]);
    out.push('\n');
    out.push_str(generated);
    if !generated.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&text[end..]);
    Ok(out)
}

/// Where the first line at or after byte `from` that is exactly `marker` (as
/// `cargo xtask tidy` reads markers: a whole line, surrounding blanks aside)
/// starts its marker: a marker quoted inside a sentence is not one.
fn marker_line(text: &str, marker: &str, from: usize) -> Option<usize> {
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let at = line_start + (line.len() - line.trim_start().len());
        if at >= from && line.trim() == marker {
            return Some(at);
        }
        line_start += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splicing_twice_gives_the_same_text() {
        let text = format!("a\n{START}\nx\ny\n{END}\nb\n");
        let once = splice(&text, "t\n").unwrap();
        assert_eq!(splice(&once, "t\n").unwrap(), once);
    }

    #[test]
    fn a_marker_quoted_in_a_sentence_is_not_a_marker() {
        let text = format!("see `{START}` below\n{START}\nold\n{END}\nrest\n");
        let new = splice(&text, "new\n").unwrap();
        assert_eq!(
            new,
            format!("see `{START}` below\n{START}\nnew\n{END}\nrest\n")
        );
    }

    #[test]
    fn markers_out_of_order_are_an_error() {
        let text = format!("a\n{END}\nx\n{START}\nb\n");
        assert!(splice(&text, "t\n").unwrap_err().contains("end marker"));
    }
}
