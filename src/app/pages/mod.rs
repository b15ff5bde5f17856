mod home;

pub use home::HomePage;
