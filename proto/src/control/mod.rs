//! The control protocol between data planes and the control plane: length-prefixed frames carrying rkyv archives.
