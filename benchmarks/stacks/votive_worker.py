"""votive stack: votive.load + Model.embed; thread count is votive's own choice (available cores)."""

import harness


class VotiveStack:
    def import_libs(self):
        import votive

        self.votive = votive

    def load(self, model_dir):
        self.model = self.votive.load(model_dir)

    def embed(self, sentences):
        return self.model.embed(sentences)


if __name__ == "__main__":
    harness.main(VotiveStack)
