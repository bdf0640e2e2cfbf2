//! The bounded tail of a command's ordinary output: the last lines, each
//! cut short, that a failed job's error message quotes. Which lines count
//! as ordinary output is `session`'s business.

use std::collections::VecDeque;

/// A tail line is kept to at most this many bytes.
const TAIL_LINE_BYTES: usize = 1024;

/// Upper bound of `tail_lines`, so that a tail stays under about 1 MiB.
pub(super) const MAX_TAIL_LINES: usize = 1000;

/// The last lines of ordinary output, each cut to [`TAIL_LINE_BYTES`].
pub(super) struct Tail {
    lines: VecDeque<String>,
    capacity: usize,
}

impl Tail {
    pub(super) fn new(capacity: usize) -> Self {
        Tail {
            lines: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    pub(super) fn push(&mut self, line: &str, truncated: bool) {
        if self.capacity == 0 {
            return;
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        let mut kept = String::from(cut(line, TAIL_LINE_BYTES));
        if truncated || kept.len() < line.len() {
            kept.push('…');
        }
        self.lines.push_back(kept);
    }

    /// The tail as a suffix for an error message (empty without output).
    pub(super) fn suffix(&self) -> String {
        if self.lines.is_empty() {
            return String::new();
        }
        let mut suffix = format!("; last {} lines of output:", self.lines.len());
        for line in &self.lines {
            suffix.push('\n');
            suffix.push_str(line);
        }
        suffix
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
pub(super) fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_lines_cut_short() {
        let mut tail = Tail::new(2);
        tail.push("first", false);
        tail.push("second", false);
        tail.push(&"é".repeat(1000), false);
        assert_eq!(tail.lines.len(), 2);
        assert_eq!(tail.lines[0], "second");
        assert!(tail.lines[1].len() <= TAIL_LINE_BYTES + '…'.len_utf8());
        assert!(tail.lines[1].ends_with('…'));
        assert!(tail.suffix().starts_with("; last 2 lines of output:\nsecond\n"));
    }
}
