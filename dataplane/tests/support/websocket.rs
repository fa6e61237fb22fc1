//! tokio-tungstenite clients: a well-behaved WebSocket peer, as most users
//! will connect. Every step is bounded by [`within`].

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::within;

/// A tokio-tungstenite client connection.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects to `url`; fails the test if the handshake fails or stalls.
pub async fn connect(url: &str) -> Client {
    let (client, _response) = within(
        "the WebSocket handshake",
        tokio_tungstenite::connect_async(url),
    )
    .await
    .unwrap_or_else(|error| panic!("WebSocket handshake with {url}: {error}"));
    client
}

/// Connects to `url` offering `protocols` in `Sec-WebSocket-Protocol`, for
/// example `"foo, veza.echo"`, and returns the handshake response too.
pub async fn connect_offering(url: &str, protocols: &str) -> (Client, Response) {
    let mut request = url.into_client_request().expect("a valid ws:// URL");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(protocols).expect("a valid header value"),
    );
    within(
        "the WebSocket handshake",
        tokio_tungstenite::connect_async(request),
    )
    .await
    .unwrap_or_else(|error| panic!("WebSocket handshake offering {protocols:?}: {error}"))
}

/// Sends one message; fails the test on error.
pub async fn send(client: &mut Client, message: Message) {
    within("a send", client.send(message))
        .await
        .unwrap_or_else(|error| panic!("send: {error}"));
}

/// The next message of any kind; fails the test if the stream ends, errs or
/// stalls.
pub async fn next_message(client: &mut Client) -> Message {
    match within("a message from the server", client.next()).await {
        Some(Ok(message)) => message,
        Some(Err(error)) => panic!("expected a message, got error: {error}"),
        None => panic!("expected a message, but the stream ended"),
    }
}

/// The next text or binary message; pings and pongs on the way are skipped
/// (tungstenite answers pings by itself).
pub async fn next_data_message(client: &mut Client) -> Message {
    loop {
        match next_message(client).await {
            Message::Ping(_) | Message::Pong(_) => continue,
            message => return message,
        }
    }
}

/// Reads until the server's close frame and asserts its code, then asserts
/// that the stream ends (the server closed TCP).
pub async fn expect_close(client: &mut Client, code: u16) {
    loop {
        match next_message(client).await {
            Message::Close(Some(frame)) => {
                assert_eq!(
                    u16::from(frame.code),
                    code,
                    "close code (reason {:?})",
                    frame.reason.as_str()
                );
                break;
            }
            Message::Close(None) => panic!("the close frame must carry code {code}"),
            _ => continue,
        }
    }
    expect_end(client).await;
}

/// Asserts that the stream ends without further messages.
pub async fn expect_end(client: &mut Client) {
    match within("the end of the connection", client.next()).await {
        None | Some(Err(_)) => {}
        Some(Ok(message)) => panic!("expected the connection to end, got {message:?}"),
    }
}
