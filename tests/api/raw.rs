//! Raw HTTP/2 to the server: what a hostile client sends that a gRPC client never would
//! (a call whose body never comes, bytes that are not a protobuf message), and answers
//! read without a gRPC library's help.

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use http::{HeaderMap, Request};
use tokio::net::TcpStream;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// One HTTP/2 connection.
pub struct Raw {
    send: SendRequest<Bytes>,
}

/// The answer to a raw call: its gRPC code and `ErrorInfo` reason (none on OK).
#[derive(Debug)]
pub struct Answer {
    pub code: Code,
    pub reason: Option<String>,
}

/// `message` framed as one gRPC message (uncompressed).
pub fn frame(message: &[u8]) -> Bytes {
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed.into()
}

fn request(path: &str, token: &str) -> Request<()> {
    Request::post(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap()
}

impl Raw {
    pub async fn open(addr: std::net::SocketAddr) -> Raw {
        let tcp = TcpStream::connect(addr).await.expect("connecting");
        let (send, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Raw {
            send: send.ready().await.expect("connection ready"),
        }
    }

    /// Starts a call and sends its headers, never its body: the caller keeps the stream
    /// (dropping it resets the call).
    pub async fn headers_only(
        &mut self,
        path: &str,
        token: &str,
    ) -> Result<(ResponseFuture, h2::SendStream<Bytes>), h2::Error> {
        self.send = self.send.clone().ready().await?;
        self.send.send_request(request(path, token), false)
    }

    /// A whole call with `body` as its raw request body; the answer.
    pub async fn call(&mut self, path: &str, token: &str, body: Bytes) -> Answer {
        self.send = self.send.clone().ready().await.expect("ready");
        let empty = body.is_empty();
        let (response, mut stream) = self
            .send
            .send_request(request(path, token), empty)
            .expect("sending the request");
        if !empty {
            stream.send_data(body, true).expect("sending the body");
        }
        answer(response).await
    }
}

/// Reads a response to its end: the status from the headers (trailers-only) or trailers.
pub async fn answer(response: ResponseFuture) -> Answer {
    let response = response.await.expect("a response");
    let headers = response.headers().clone();
    let status = match Status::from_header_map(&headers) {
        Some(status) => status,
        None => {
            let mut body = response.into_body();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.expect("body");
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            let trailers: HeaderMap = body.trailers().await.expect("trailers").unwrap_or_default();
            Status::from_header_map(&trailers).expect("grpc-status in the trailers")
        }
    };
    Answer {
        code: status.code(),
        reason: status.get_details_error_info().map(|info| info.reason),
    }
}
