//! PLACEHOLDER: being written; replaced wholesale by its owner.

use crate::error::{ApiError, Error, ErrorType, Lossy};
use crate::ir::{Request, Response, Usage};
use crate::stream::{EncoderOptions, Event, StreamDecoder, StreamEncoder};

pub const NAME: &str = "Google Gemini";

pub fn decode_request(_body: &[u8], _lossy: &mut Lossy) -> Result<Request, Error> {
    Err(Error::Invalid("not yet".into()))
}
pub fn encode_request(_req: &Request, _lossy: &mut Lossy) -> Result<Vec<u8>, Error> {
    Err(Error::Invalid("not yet".into()))
}
pub fn decode_response(_body: &[u8]) -> Result<Response, Error> {
    Err(Error::Invalid("not yet".into()))
}
pub fn encode_response(_resp: &Response, _opts: &EncoderOptions) -> Vec<u8> {
    Vec::new()
}
pub fn decode_error(status: u16, _body: &[u8]) -> ApiError {
    ApiError { status, kind: ErrorType::from_status(status), message: String::new() }
}
pub fn encode_error(_err: &ApiError) -> Vec<u8> {
    Vec::new()
}
#[derive(Default)]
pub struct Decoder;
impl StreamDecoder for Decoder {
    fn event(&mut self, _n: &str, _d: &str, _out: &mut Vec<Event>) -> Result<(), Error> { Ok(()) }
    fn finish(&mut self, _out: &mut Vec<Event>) {}
    fn complete(&self) -> bool { false }
}
pub struct Encoder;
impl Encoder { pub fn new(_o: EncoderOptions) -> Self { Encoder } }
impl StreamEncoder for Encoder {
    fn event(&mut self, _e: Event, _out: &mut Vec<u8>) {}
    fn finish(&mut self, _u: Option<Usage>, _out: &mut Vec<u8>) {}
    fn fail(&mut self, _m: &str, _out: &mut Vec<u8>) {}
    fn usage(&self) -> Option<Usage> { None }
}
