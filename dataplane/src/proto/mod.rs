//! Protocol codecs for servers on the [`transport`](crate::transport):
//! parsers that read requests in place from a connection's received bytes
//! (a request may arrive in any number of pieces and a piece may hold many
//! requests), and encoders that append replies to a send buffer.
//!
//! Every parser has limits on every length it reads and answers input
//! past them, or input that breaks the protocol, with an error that says
//! which, never a panic and never an allocation the peer sizes.
//!
//! - [`resp`]: the Redis serialization protocol, RESP2 and RESP3.
//! - [`http`]: HTTP/1.1 requests, responses and a router.

pub mod http;
pub mod resp;
