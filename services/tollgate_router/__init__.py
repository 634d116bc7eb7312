"""The router: classifies requests and picks the cheapest model chain from the policy."""
