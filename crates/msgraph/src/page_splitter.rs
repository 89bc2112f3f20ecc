//! Splits a delta page's JSON, as its chunks arrive, into the elements of its top-level
//! `value` array (one message or removal each) and the rest of the document (the links). At
//! page size 1000 a page is about 12 MB; held whole and then parsed, it was the worker's peak
//! memory. Only the structure is tracked here (strings, escapes, nesting); each element is
//! parsed by serde on its own.

/// What the splitter found wrong with the document's shape.
pub(crate) type SplitError = String;

#[derive(Default)]
pub(crate) struct PageSplitter {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// Inside the top-level `value` array.
    in_items: bool,
    /// Inside one element of it.
    in_item: bool,
    /// The last string closed at the top level was `"value"` (so a `[` after it opens the items).
    after_value_key: bool,
    item: Vec<u8>,
    rest: Vec<u8>,
}

impl PageSplitter {
    /// Takes the next chunk; each element completed in it goes to `on_item`.
    pub(crate) fn feed(
        &mut self,
        chunk: &[u8],
        on_item: &mut dyn FnMut(&[u8]) -> Result<(), SplitError>,
    ) -> Result<(), SplitError> {
        let mut i = 0;
        while i < chunk.len() {
            if self.escaped {
                self.keep(&chunk[i..=i]);
                self.escaped = false;
                i += 1;
                continue;
            }
            if self.in_string {
                // Strings are most of a page (bodies): skip to the next quote or backslash.
                match memchr::memchr2(b'"', b'\\', &chunk[i..]) {
                    None => {
                        self.keep(&chunk[i..]);
                        i = chunk.len();
                    }
                    Some(at) => {
                        let end = i + at;
                        self.keep(&chunk[i..=end]);
                        if chunk[end] == b'\\' {
                            self.escaped = true;
                        } else {
                            self.in_string = false;
                            if self.depth == 1 && !self.in_items {
                                self.after_value_key = self.rest.ends_with(b"\"value\"");
                            }
                        }
                        i = end + 1;
                    }
                }
                continue;
            }
            let byte = chunk[i];
            i += 1;
            match byte {
                b'"' => {
                    self.start_element_if_due(byte)?;
                    self.in_string = true;
                    self.keep(&[byte]);
                }
                b'{' | b'[' => {
                    self.start_element_if_due(byte)?;
                    let opens_items = byte == b'[' && self.depth == 1 && self.after_value_key;
                    self.keep(&[byte]);
                    self.depth += 1;
                    if opens_items {
                        self.in_items = true;
                    }
                }
                b'}' | b']' => {
                    self.depth = self
                        .depth
                        .checked_sub(1)
                        .ok_or("invalid delta JSON: unbalanced brackets")?;
                    if self.in_item && self.depth == 2 {
                        self.item.push(byte);
                        self.in_item = false;
                        on_item(&self.item)?;
                        self.item.clear();
                    } else {
                        if self.in_items && self.depth == 1 {
                            self.in_items = false;
                        }
                        self.keep(&[byte]);
                    }
                }
                b' ' | b'\t' | b'\r' | b'\n' => self.keep(&[byte]),
                // Between elements: the separators are dropped with the elements.
                b',' if self.in_items && !self.in_item => {}
                b':' => self.keep(&[byte]),
                _ => {
                    self.start_element_if_due(byte)?;
                    self.keep(&[byte]);
                }
            }
            if !matches!(byte, b' ' | b'\t' | b'\r' | b'\n' | b':' | b'"') {
                self.after_value_key = false;
            }
        }
        Ok(())
    }

    /// The document without its elements (`"value":[]`), once every chunk is in.
    pub(crate) fn finish(self) -> Result<Vec<u8>, SplitError> {
        if self.depth != 0 || self.in_string || self.in_item {
            return Err("invalid delta JSON: the page ends early".into());
        }
        Ok(self.rest)
    }

    /// A byte at the level of the items' array, outside an element, starts one: only objects.
    fn start_element_if_due(&mut self, byte: u8) -> Result<(), SplitError> {
        if self.in_items && !self.in_item && self.depth == 2 {
            if byte != b'{' {
                return Err("invalid delta page: an element of value is not an object".into());
            }
            self.in_item = true;
        }
        Ok(())
    }

    fn keep(&mut self, bytes: &[u8]) {
        if self.in_item {
            self.item.extend_from_slice(bytes);
        } else if !self.in_items || self.depth != 2 {
            self.rest.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(doc: &str, chunk: usize) -> Result<(Vec<String>, String), SplitError> {
        let mut splitter = PageSplitter::default();
        let mut items = Vec::new();
        for part in doc.as_bytes().chunks(chunk) {
            splitter.feed(part, &mut |item| {
                items.push(String::from_utf8(item.to_vec()).unwrap());
                Ok(())
            })?;
        }
        let rest = String::from_utf8(splitter.finish()?).unwrap();
        Ok((items, rest))
    }

    #[test]
    fn elements_and_the_rest_come_apart_whatever_the_chunking() {
        let doc = r#"{"@odata.context":"value [x]","value" : [ {"id":"a","body":{"content":"<p class=\"q\">}]\\</p>"}},
            {"id":"b","@removed":{"reason":"deleted"},"n":[1,{"value":[2]}]} ],"@odata.deltaLink":"https://g/x?value=[1]"}"#;
        let whole = split(doc, doc.len()).unwrap();
        for chunk in [1, 2, 3, 7, 64] {
            assert_eq!(split(doc, chunk).unwrap(), whole, "chunks of {chunk}");
        }
        let (items, rest) = whole;
        assert_eq!(items.len(), 2);
        let first: serde_json::Value = serde_json::from_str(&items[0]).unwrap();
        assert_eq!(first["body"]["content"], "<p class=\"q\">}]\\</p>");
        let second: serde_json::Value = serde_json::from_str(&items[1]).unwrap();
        assert_eq!(second["n"][1]["value"][0], 2);
        let rest: serde_json::Value = serde_json::from_str(&rest).unwrap();
        assert_eq!(rest["value"], serde_json::json!([]));
        assert_eq!(rest["@odata.deltaLink"], "https://g/x?value=[1]");
        assert_eq!(rest["@odata.context"], "value [x]");
    }

    #[test]
    fn broken_pages_are_refused() {
        assert!(split(r#"{"value":[{"id":"a"}"#, 4).is_err(), "cut short");
        assert!(split(r#"{"value":[1,2]}"#, 4).is_err(), "not objects");
        assert!(split(r#"{"value":[]}]}"#, 4).is_err(), "unbalanced");
        assert!(split(r#"{"value":["#, 4).is_err());
        let (items, _) = split(r#"{"value":[]}"#, 3).unwrap();
        assert!(items.is_empty());
    }
}
