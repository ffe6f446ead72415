//! The characters of each alphabet, and reading and writing codes in a
//! trial's `code_format`.

use equipoise_stream::{ChaCha20Rng, uniform_below};
use equipoise_trial::{CodeAlphabet, CodeFormat, CodeSegment};

/// Crockford's base32: no I, L, O or U, so a code read aloud or copied from
/// a kit label is not mistaken for another.
const BASE32: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const DIGITS: &[u8; 10] = b"0123456789";
const ALPHANUMERIC: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// The characters of an alphabet, in ASCII order, so that among codes of one
/// format lexicographic order is also numeric order.
pub fn alphabet_characters(alphabet: &CodeAlphabet) -> &'static [u8] {
    match alphabet {
        CodeAlphabet::Base32 => BASE32,
        CodeAlphabet::Digits => DIGITS,
        CodeAlphabet::Alphanumeric => ALPHANUMERIC,
    }
}

/// Every code of a format has this many characters.
pub fn code_length(format: &CodeFormat) -> usize {
    format.segments.iter().map(segment_length).sum()
}

fn segment_length(segment: &CodeSegment) -> usize {
    match segment {
        CodeSegment::Literal(text) => text.len(),
        CodeSegment::Random { length, .. } => *length as usize,
    }
}

/// One code, each random character uniform over its alphabet.
pub(super) fn draw_code(rng: &mut ChaCha20Rng, format: &CodeFormat) -> String {
    let mut code = String::with_capacity(code_length(format));
    for segment in &format.segments {
        match segment {
            CodeSegment::Literal(text) => code.push_str(text),
            CodeSegment::Random { length, alphabet } => {
                let characters = alphabet_characters(alphabet);
                for _ in 0..*length {
                    // Alphabets have at most 36 characters, so this fits u32.
                    let index = uniform_below(rng, characters.len() as u32) as usize;
                    code.push(char::from(characters[index]));
                }
            }
        }
    }
    code
}

/// Whether `code` is exactly of the format: same literals, same lengths,
/// random characters from their alphabet (upper case only).
pub fn matches_format(format: &CodeFormat, code: &str) -> bool {
    let mut rest = code.as_bytes();
    for segment in &format.segments {
        let length = segment_length(segment);
        if rest.len() < length {
            return false;
        }
        let (head, tail) = rest.split_at(length);
        let fits = match segment {
            CodeSegment::Literal(text) => head == text.as_bytes(),
            CodeSegment::Random { alphabet, .. } => {
                let characters = alphabet_characters(alphabet);
                head.iter().all(|c| characters.contains(c))
            }
        };
        if !fits {
            return false;
        }
        rest = tail;
    }
    rest.is_empty()
}
