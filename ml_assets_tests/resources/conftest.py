from ml_assets_tests.fixtures.blackhole import black_hole_fixture  # noqa: F401
from ml_assets_tests.fixtures.environment import ml_env_fixture  # noqa: F401
from ml_assets_tests.fixtures.smtp import smtp_auth_sink  # noqa: F401
