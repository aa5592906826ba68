"""Staff web pages."""

urlpatterns: list = []
