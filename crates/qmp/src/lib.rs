//! QEMU Machine Protocol client: a sans-IO codec and a tokio connection.
