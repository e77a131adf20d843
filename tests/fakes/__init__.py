"""In-process fakes of outside services, used by the test suite and by ``kanvoice demo``."""
