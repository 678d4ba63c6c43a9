"""Support for tests/test_ingress.py and tests/test_api_clients.py: proxy harnesses, a browser."""
