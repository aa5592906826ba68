import functools

from django.core.paginator import Paginator as DjangoPaginator
from rest_framework.pagination import PageNumberPagination


class Pagination(PageNumberPagination):
    """``{count, next, previous, results}``; ``?page=`` and ``?page_size=`` (at most 500)."""

    page_size_query_param = "page_size"
    max_page_size = 500


class _CountedPaginator(DjangoPaginator):
    """A paginator told its count instead of counting the rows."""

    def __init__(self, *args, known_count: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.known_count = known_count

    @property
    def count(self) -> int:
        return self.known_count


class TalliedPagination(Pagination):
    """The worklist's pages: when the view can tell the number of rows without counting
    them (``view.tallied_count()``: from the status tally), the total comes from there;
    otherwise the rows are counted."""

    def paginate_queryset(self, queryset, request, view=None):
        known = view.tallied_count() if view is not None else None
        self.django_paginator_class = (
            DjangoPaginator if known is None else functools.partial(_CountedPaginator, known_count=known)
        )
        return super().paginate_queryset(queryset, request, view)
