"""The `repeat` example as a python-rtmbot 0.4 class-style plugin (its README's RepeatPlugin).

`bench/compare` runs this same file on python-rtmbot 0.4.1 and on rtmbotd, both loading
it through ACTIVE_PLUGINS: plugins.repeat.RepeatPlugin. The reply text is the one of
plugins/repeat in this repository, which the floor client copies too.
"""
from rtmbot.core import Plugin


class RepeatPlugin(Plugin):

    def process_message(self, data):
        if data['channel'].startswith("D"):
            self.outputs.append(
                [data['channel'], 'from repeat1 "{}" in channel {}'.format(
                    data['text'], data['channel']
                )]
            )
