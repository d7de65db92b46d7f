"""The HTTP edge: middleware, problem answers, authentication, request parameters, handlers."""
