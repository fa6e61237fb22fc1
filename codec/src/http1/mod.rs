pub mod request; pub use request::{BodyFraming, RequestHead};
