from django.core.management.base import BaseCommand

from pumps import outbox
from pumps.alerting.sweep import sweep


class Command(BaseCommand):
    help = "Run one alert sweep synchronously (the code beat runs every 5 minutes), then deliver the outbox."

    def add_arguments(self, parser):
        parser.add_argument("--no-deliver", action="store_true", help="Only create alerts and notifications.")

    def handle(self, *args, **options):
        result = sweep()
        sent = 0 if options["no_deliver"] else outbox.deliver_due()
        self.stdout.write(
            f"checked {result.pumps_checked} pumps, created {result.alerts_created} alerts and "
            f"{result.notifications_created} notifications, sent {sent}"
        )
