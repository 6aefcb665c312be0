import { Empty } from "@/components/states";
import { Link } from "@/lib/router";

export function NotFoundPage() {
  return (
    <Empty title="There is no page here">
      <Link to="/" className="underline underline-offset-4">
        Go to the overview
      </Link>
    </Empty>
  );
}
