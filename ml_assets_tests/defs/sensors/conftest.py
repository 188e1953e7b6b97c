from ml_assets_tests.fixtures.smtp import smtp_sink  # noqa: F401
