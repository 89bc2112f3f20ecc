//! How a successful Graph answer's body is read: chunk by chunk as it arrives, so a reader that
//! can work as the bytes come (a delta page) never holds the body whole.

/// Takes a 2xx body chunk by chunk; an error (or a body it cannot finish) makes the attempt a
/// transient failure, as an unreadable body always was.
pub(crate) trait BodyReader<T> {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), String>;
    fn finish(self) -> Result<T, String>;
}

/// The whole body in one buffer (sized as announced), then one parse: for small answers.
pub(crate) struct Whole<F> {
    body: Vec<u8>,
    parse: F,
}

impl<F> Whole<F> {
    pub(crate) fn new(announced: Option<u64>, parse: F) -> Self {
        // A lying length only costs a reallocation; a huge one is not trusted beyond this.
        const MAX_PRESIZE: u64 = 64 << 20;
        Self {
            body: Vec::with_capacity(announced.unwrap_or(0).min(MAX_PRESIZE) as usize),
            parse,
        }
    }
}

impl<T, F: FnOnce(&[u8]) -> Result<T, String>> BodyReader<T> for Whole<F> {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), String> {
        self.body.extend_from_slice(chunk);
        Ok(())
    }

    fn finish(self) -> Result<T, String> {
        (self.parse)(&self.body)
    }
}
