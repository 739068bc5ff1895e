//! polymq-mqtt: the mqtt frontend.
