//! The flaky upstream's gRPC service, `levee.testing.v1.Flaky`: echo as
//! unary, server-streaming, client-streaming and bidi-streaming calls, each
//! answer naming the instance. Injected gRPC codes are handled before a call
//! reaches this service (see `http.rs`).

use std::{pin::Pin, sync::Arc, time::Duration};

use futures_util::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::Shared;
use crate::pb::{
    EchoRequest, EchoResponse, StreamRequest,
    flaky_server::{Flaky, FlakyServer},
};

type ResponseStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

/// The generated tonic server around this instance's service.
pub(crate) fn service(shared: Arc<Shared>) -> FlakyServer<FlakyGrpc> {
    FlakyServer::new(FlakyGrpc { shared })
}

pub(crate) struct FlakyGrpc {
    shared: Arc<Shared>,
}

impl FlakyGrpc {
    fn answer(&self, message: String, sequence: u32) -> EchoResponse {
        EchoResponse {
            message,
            instance: self.shared.id.clone(),
            sequence,
        }
    }
}

/// A stream fed by a channel, so a spawned task can produce responses.
fn channel_stream(mut rx: mpsc::Receiver<Result<EchoResponse, Status>>) -> ResponseStream {
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

#[tonic::async_trait]
impl Flaky for FlakyGrpc {
    async fn echo(&self, req: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        Ok(Response::new(self.answer(req.into_inner().message, 0)))
    }

    type ServerStreamStream = ResponseStream;

    async fn server_stream(
        &self,
        req: Request<StreamRequest>,
    ) -> Result<Response<ResponseStream>, Status> {
        let req = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let id = self.shared.id.clone();
        tokio::spawn(async move {
            for sequence in 0..req.count {
                if sequence > 0 && req.interval_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(req.interval_ms.into())).await;
                }
                let msg = EchoResponse {
                    message: format!("{} {sequence}", req.message),
                    instance: id.clone(),
                    sequence,
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
            if req.final_code != 0 {
                let status = Status::new(req.final_code.into(), "flaky: stream failed");
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(channel_stream(rx)))
    }

    async fn client_stream(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        let mut stream = req.into_inner();
        let mut messages = Vec::new();
        while let Some(msg) = stream.message().await? {
            messages.push(msg.message);
        }
        let count = u32::try_from(messages.len()).unwrap_or(u32::MAX);
        Ok(Response::new(self.answer(messages.join(","), count)))
    }

    type BidiStreamStream = ResponseStream;

    async fn bidi_stream(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let mut stream = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let id = self.shared.id.clone();
        tokio::spawn(async move {
            let mut sequence = 0;
            loop {
                let item = match stream.message().await {
                    Ok(Some(msg)) => Ok(EchoResponse {
                        message: msg.message,
                        instance: id.clone(),
                        sequence,
                    }),
                    Ok(None) => return,
                    Err(status) => Err(status),
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
                sequence += 1;
            }
        });
        Ok(Response::new(channel_stream(rx)))
    }
}
