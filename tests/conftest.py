pytest_plugins = [
    "tests.support.vcsim_fixtures",
    "tests.support.db",
    "tests.support.app",
]
