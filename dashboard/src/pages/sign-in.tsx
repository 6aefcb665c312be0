import { KeyRound, Loader2 } from "lucide-react";
import { type FormEvent, useState } from "react";
import { ErrorAlert } from "@/components/states";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Input } from "@/components/ui/input";
import { Field } from "@/components/ui/label";
import { checkToken, errorMessage } from "@/lib/api";
import { setToken, signOutReason } from "@/lib/auth";
import { useTitle } from "@/lib/hooks";

export function SignInPage() {
  useTitle("Sign in");
  const [value, setValue] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(signOutReason());

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const token = value.trim();
    if (!token) {
      setError("Enter the admin token.");
      return;
    }
    setBusy(true);
    setError("");
    try {
      if (await checkToken(token)) {
        setValue("");
        setToken(token);
      } else {
        setError("The control plane refused this token. Check it and try again.");
      }
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <main className="flex min-h-dvh items-center justify-center bg-muted/40 p-4">
      <div className="w-full max-w-sm">
        <div className="mb-6 flex items-center justify-center gap-2 text-lg font-semibold tracking-tight">
          <span className="flex size-8 items-center justify-center rounded-md bg-primary text-sm font-bold text-primary-foreground">
            ll
          </span>
          llmgw
        </div>
        <Card>
          <CardHeader className="p-6 pb-4">
            <CardTitle className="text-lg">Sign in</CardTitle>
            <CardDescription className="text-sm">
              Enter the admin token of this gateway. It is kept in this tab only and forgotten when you sign out or
              close it.
            </CardDescription>
          </CardHeader>
          <CardContent className="p-6 pt-0">
            <form onSubmit={submit} className="grid gap-4" noValidate>
              <Field
                label="Admin token"
                htmlFor="admin-token"
                hint={
                  <>
                    On a local start it is in <code className="font-mono">data/admin-token</code>, or in{" "}
                    <code className="font-mono">LLMGW_ADMIN_TOKEN</code>.
                  </>
                }
              >
                <Input
                  id="admin-token"
                  name="admin-token"
                  type="password"
                  autoComplete="current-password"
                  autoFocus
                  value={value}
                  onChange={(e) => setValue(e.target.value)}
                  aria-invalid={error ? true : undefined}
                />
              </Field>
              {error ? <ErrorAlert message={error} /> : null}
              <Button type="submit" disabled={busy} className="w-full">
                {busy ? <Loader2 className="animate-spin" /> : <KeyRound />}
                Sign in
              </Button>
            </form>
          </CardContent>
        </Card>
      </div>
    </main>
  );
}
