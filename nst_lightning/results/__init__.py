"""Reading finished runs: finding them, the objective-independent metrics, and the report's figures."""
